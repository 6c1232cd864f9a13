// NTFS through libntfs-3g, read-only, over a BlockDevice (a custom
// ntfs_device: no file, no loop device, no kernel driver).
//
// Inode numbers are MFT record numbers (without the sequence number, which
// is the generation); the root is record 5. Metafiles (records below 16)
// are not listed, DOS 8.3 names neither. Names are UTF-16 converted to
// UTF-8 (see ntfs_names.h for unconvertible names), lookups are exact.
// Ownership and modes come from FsOpenOptions (NTFS stores SIDs and ACLs,
// not POSIX owners). A volume left dirty or hibernated is shown as stored:
// $LogFile is never replayed; journal() says so.
//
// Extended attributes (the names ntfs-3g uses): each named data stream as
// "user.<stream>" (listed); "system.ntfs_attrib" (Windows attributes, 4
// bytes LE), "system.ntfs_crtime" (creation time, 8 bytes LE in 100 ns
// units since 1601), "system.ntfs_acl" (security descriptor, self-relative)
// and "system.ntfs_reparse_data" (raw reparse point) are readable by name,
// not listed (as in ntfs-3g, so copying tools do not try to set them).
#pragma once

#include <string>

#include "readers/fs/filesystem.h"

namespace sendense {

// Throws Error(EIO) naming `name` (e.g. "backup-x/part2") when the boot
// sector, $MFT or another metafile needed to mount is damaged.
FilesystemPtr open_ntfs_filesystem(BlockDevicePtr device, const std::string& name,
                                   const FsOpenOptions& options = {});

}  // namespace sendense
