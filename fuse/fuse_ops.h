// The FUSE edge: libfuse low-level callbacks over a RestoreTree (a
// FuseContext is the session's userdata). Each op replies exactly once;
// sendense::Error becomes its errno, any other exception EIO, both logged.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "fuse/metrics.h"
#include "fuse/node_files.h"
#include "fuse/prefetch.h"
#include "fuse/restore_tree.h"
#include "fuse/session_io.h"
#include "readers/common/handle_table.h"

namespace sendense {

// An open folder: the catalog's folders keep their whole listing, taken
// at opendir; a folder inside a backup keeps the page read last (a folder
// of millions of entries costs one page here). Cookies are restore_tree.h's:
// stable, since a backup never changes, so a handle adopted after a restart
// reads the page its offset names. Like OpenFile, it pins no backup.
struct DirHandle {
  std::mutex mutex;                // readdir and readdirplus of one handle
  // What the folder's last listing (restore_tree.h) brought: the whole
  // listing, or one page. `from` starts as no cookie at all, so that a
  // handle taken over after a restart reads the page its offset names.
  std::vector<NodeEntry> entries;
  uint64_t from = ~uint64_t{0};
  bool end = false;
  bool attrs = false;
  uint64_t noted = ~uint64_t{0};   // the page whose small files were noted for reading ahead (prefetch.h)
  std::shared_ptr<const AttachedBackup::ChangeMark> read_through;  // the attach its pages came from
  AttachedBackupPtr pin;           // kernel-backend volumes only (see OpenFile)
};

// What the callbacks share. Outlives the session; the handles still open
// when it ends are freed with it (the kernel sends no RELEASE for them).
struct FuseContext {
  explicit FuseContext(RestoreTree& t) : tree(t), node_files(t) {}
  RestoreTree& tree;
  Metrics* metrics = nullptr;  // counts requests and bytes when set
  fuse_session* session = nullptr;  // for notifications (set once the session exists)
  SessionIo* io = nullptr;     // the session's I/O (session_io.h)
  HandleTable<OpenFile> files;  // files the kernel opened (with --attach kernel)
  HandleTable<DirHandle> dirs;
  NodeFiles node_files;        // files read without an open (node_files.h)
  // Reads small files ahead when reads come without an open (prefetch.h);
  // its thread runs while the session does (ServedMount).
  Prefetcher prefetch{tree, node_files};
  // Mounted "ro" (ServedMount sets it from the mount options): the kernel
  // itself refuses every writing open, so OPEN need not come here.
  bool read_only_mount = false;
  // OPEN is answered ENOSYS (set at INIT when the kernel supports it, the
  // mount is read-only and open files need not pin anything).
  std::atomic<bool> no_open{false};
};

// The largest READ the kernel may send (the mount's max_read; op_init
// agrees). A spliced reply (fuse_ops.cpp: reply_mapped) must fit one pipe,
// and libfuse counts a page per piece on top of the bytes; without
// CAP_SYS_RESOURCE a pipe grows to /proc/sys/fs/pipe-max-size at most,
// 1 MiB by default, the size of the kernel's own largest READ. So READs
// stop at 896 KiB, which leaves room for Filesystem::kMaxReadExtents pieces.
inline constexpr unsigned kMaxRead = 896 * 1024;
inline constexpr size_t kSplicePipe = 1024 * 1024;  // the pipe a spliced reply must fit

fuse_lowlevel_ops make_fuse_operations();

}  // namespace sendense
