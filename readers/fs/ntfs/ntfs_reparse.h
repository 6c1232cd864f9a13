// Reparse points and Interix symlinks: which ones are shown as symlinks and
// the target shown for them. Pure functions over the stored bytes.
//
// Presentation (documented in README; never resolved or followed). No
// target is ever absolute, whatever the data says: the host kernel follows
// the mount's symlinks, so "/etc/shadow" would name the host's file.
// - Windows symlink (IO_REPARSE_TAG_SYMLINK) with the "relative" flag: the
//   substitute name with every '\' turned into '/' ("..\a\b" -> "../a/b").
// - Absolute Windows symlink and junction (IO_REPARSE_TAG_MOUNT_POINT): the
//   print name (or the substitute name) without a "\??\", "\\?\" or "\\.\"
//   prefix, '\' turned into '/': "C:\Users\x" -> "C:/Users/x"; UNC paths
//   are named by a first component: "\\srv\share" -> "UNC/srv/share".
// - WSL symlink (IO_REPARSE_TAG_LX_SYMLINK): its UTF-8 target as stored.
// - Interix symlink (ntfs-3g's own: a SYSTEM file whose data is "IntxLNK\1"
//   and a UTF-16 target): the target as stored.
// Then, for every kind, leading '/' are dropped (a bare root is "."): a
// path rooted without a drive ("\etc\shadow", WSL's "/etc/shadow") is shown
// relative to the link's folder ("etc/shadow").
// Other tags are regular files or folders; some keep their data elsewhere
// (deduplication, cloud placeholders, HSM, WOF): reading them is an error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sendense::ntfs {

constexpr uint32_t kTagMountPoint = 0xA0000003u;
constexpr uint32_t kTagSymlink = 0xA000000Cu;
constexpr uint32_t kTagLxSymlink = 0xA000001Du;

struct Reparse {
  uint32_t tag = 0;
  std::optional<std::string> symlink_target;  // set when shown as a symlink
};

// Parses a $REPARSE_POINT value. nullopt if it is too short to hold a tag;
// a symlink/junction whose names do not fit the value has no target (and is
// then reported as damaged by the reader).
std::optional<Reparse> parse_reparse(std::string_view value);

// True for tags that are known symlink-like (the reader shows S_IFLNK and an
// unreadable target is an error rather than a regular file).
bool is_symlink_tag(uint32_t tag);

// A human name for tags whose data is not in the file's $DATA, or nullopt.
std::optional<std::string> dataless_tag_name(uint32_t tag);

// The Interix symlink magic at the start of $DATA.
inline constexpr std::string_view kInterixSymlinkMagic{"IntxLNK\1", 8};

// The target of an Interix symlink from its whole $DATA, or nullopt if it is
// not one (wrong magic, odd length).
std::optional<std::string> parse_interix_symlink(std::string_view data);

}  // namespace sendense::ntfs
