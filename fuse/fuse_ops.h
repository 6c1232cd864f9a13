// The FUSE edge: libfuse low-level callbacks over a RestoreTree (a
// FuseContext is the session's userdata). Each op replies exactly once;
// sendense::Error becomes its errno, any other exception EIO, both logged.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <vector>

#include "fuse/handle_table.h"
#include "fuse/metrics.h"
#include "fuse/restore_tree.h"
#include "fuse/session_io.h"

namespace sendense {

// An open folder: its listing, taken once at opendir. Listings of a backup
// never change, so cookies (1 + index) stay valid when a handle is adopted
// after a restart and listed again. Like OpenFile, it pins no backup.
struct DirHandle {
  std::vector<NodeEntry> entries;
  AttachedBackupPtr pin;  // kernel-backend volumes only (see OpenFile)
};

// What the callbacks share. Outlives the session; the handles still open
// when it ends are freed with it (the kernel sends no RELEASE for them).
struct FuseContext {
  explicit FuseContext(RestoreTree& t) : tree(t) {}
  RestoreTree& tree;
  Metrics* metrics = nullptr;  // counts requests and bytes when set
  SessionIo* io = nullptr;     // the session's I/O (session_io.h)
  HandleTable<OpenFile> files;
  HandleTable<DirHandle> dirs;
};

fuse_lowlevel_ops make_fuse_operations();

}  // namespace sendense
