// A Filesystem over a read-only host mount (the kernel backend's staging
// mount). Every name is resolved beneath the volume root with openat2
// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
// RESOLVE_NO_XDEV), so a guest symlink ("x -> /etc", "../../..") or a ".."
// can never lead outside the volume; symlinks are returned as stored.
//
// Inode numbers are the host's st_ino (the FUSE layer keeps 40 bits: a
// larger one is an EIO). The kernel offers no "open by inode number" without
// file handles, so the reader remembers, for every inode it handed out by
// lookup or readdir, one (parent inode, name) pair and re-walks from the root
// when asked about it. The FUSE layer only asks about inodes it learned that
// way. The map is bounded (kMaxRemembered); past the bound new inodes are not
// remembered and asking about them gives ESTALE (logged once).
#pragma once

#include <memory>
#include <string>

#include "readers/fs/filesystem.h"

namespace sendense {

// `root` is the mounted volume's root folder; `type` the filesystem type
// shown ("ext4", "btrfs"); `name` names the volume in errors. `journal` is
// what the mounter did about the journal (reported as is). `keep_alive` is
// released only after every descriptor into the mount is closed (the kernel
// backend's mount, which unmounts when the last volume lets go of it).
FilesystemPtr open_passthrough_filesystem(const std::string& root, const std::string& type,
                                          const std::string& name, JournalReport journal = {},
                                          std::shared_ptr<void> keep_alive = {});

}  // namespace sendense
