// ext2/ext3/ext4 through libext2fs, read-only, over a BlockDevice (a custom
// io_manager: no temporary files, no loop devices). A journal that needs
// recovery is replayed in memory (ext_journal.h) unless the options say not
// to; the image is never written. File data is read by mapping extents (or
// indirect blocks) once at open() and reading large runs straight from the
// BlockDevice.
#pragma once

#include <string>

#include "readers/fs/filesystem.h"

namespace sendense {

// Throws Error(EIO) naming `name` (e.g. "backup-x/part1") when the
// superblock or group descriptors are damaged.
FilesystemPtr open_ext_filesystem(BlockDevicePtr device, const std::string& name,
                                  const FsOpenOptions& options = {});

namespace ext {

// The checks the raw superblock passes before libext2fs (or the journal
// code) opens the volume: magic, revision, block and cluster sizes, counts
// that fit the device. Throws Error(EIO) naming `name`. Called by
// open_ext_filesystem; public for the journal fuzz target (tests/fuzz/).
void check_superblock(const BlockDevice& device, const std::string& name);

}  // namespace ext

}  // namespace sendense
