// XFS v4 and v5, read-only, by a reader of our own over a BlockDevice.
//
// Why not libfsxfs (Debian's 20201117 release): measured on our fixtures it
// stops walking the tree at the first btree-mapped file (frag.bin: "unable
// to read inode"), decodes bigtime timestamps as 1999 dates and reports
// directory sizes of 0; it is an experimental release and would also need a
// libbfio adapter. So this reader decodes the on-disk format itself (learnt
// from xfsprogs' libxfs headers; no code taken).
//
// The log is never replayed or required: open() finds the log head and says
// whether the last record is an unmount record (journal(): "clean") or not
// ("skipped": the view is as of the last checkpoint). File data is mapped by
// extent once at open() and read straight from the BlockDevice in large
// runs, without a lock. Realtime files and unknown incompatible features
// give a clear error, never wrong data.
#pragma once

#include <string>

#include "readers/fs/filesystem.h"

namespace sendense {

// Throws Error(EIO) naming `name` when the superblock or an AG header is
// damaged, Error(EOPNOTSUPP) for an XFS this reader cannot read.
FilesystemPtr open_xfs_filesystem(BlockDevicePtr device, const std::string& name, const FsOpenOptions& options = {});

}  // namespace sendense
