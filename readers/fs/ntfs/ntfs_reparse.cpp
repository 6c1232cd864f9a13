#include "readers/fs/ntfs/ntfs_reparse.h"

#include <algorithm>

#include "readers/fs/ntfs/ntfs_names.h"

namespace sendense::ntfs {

namespace {

uint32_t le(std::string_view v, size_t offset, size_t bytes) {
  uint32_t x = 0;
  for (size_t i = bytes; i-- > 0;) x = (x << 8) | static_cast<unsigned char>(v[offset + i]);
  return x;
}

// Host programs follow the symlinks of the mount: an absolute target would
// name a host file (`\etc\shadow` -> /etc/shadow). Whatever the reparse data
// says, a target starts with a name: leading '/' are dropped (a bare root is
// "."), so it stays relative to the link's folder.
std::string never_absolute(std::string s) {
  const size_t name = s.find_first_not_of('/');
  if (name == std::string::npos) return s.empty() ? s : ".";
  s.erase(0, name);
  return s;
}

// A Windows path as a relative one: the NT/Win32 namespace prefixes go
// ("\??\C:\x", "\\?\C:\x" -> "C:/x"), a UNC path is named by its first
// component ("\\srv\share", "\??\UNC\srv\share" -> "UNC/srv/share"), '\'
// becomes '/', and a rooted path without a drive loses its root
// ("\etc\shadow" -> "etc/shadow").
std::string windows_target(std::string s) {
  for (std::string_view prefix : {"\\??\\", "\\\\?\\", "\\\\.\\"})
    if (s.starts_with(prefix)) {
      s.erase(0, prefix.size());
      break;
    }
  if (s.starts_with("\\\\")) s = "UNC\\" + s.substr(2);
  std::replace(s.begin(), s.end(), '\\', '/');
  return never_absolute(std::move(s));
}

// A UTF-16 name at [buffer + offset, + length) of `v`, or nullopt.
std::optional<std::string> name_at(std::string_view v, size_t buffer, uint32_t offset, uint32_t length) {
  if (length % 2 != 0 || buffer + offset + length > v.size()) return std::nullopt;
  return utf16le_to_utf8(v.data() + buffer + offset, length / 2);
}

}  // namespace

bool is_symlink_tag(uint32_t tag) { return tag == kTagSymlink || tag == kTagMountPoint || tag == kTagLxSymlink; }

std::optional<Reparse> parse_reparse(std::string_view v) {
  if (v.size() < 8) return std::nullopt;
  Reparse r;
  r.tag = le(v, 0, 4);
  const size_t data_length = le(v, 4, 2);
  if (8 + data_length < v.size()) v = v.substr(0, 8 + data_length);  // trailing bytes are not ours
  if (r.tag == kTagSymlink || r.tag == kTagMountPoint) {
    const size_t buffer = r.tag == kTagSymlink ? 20 : 16;
    if (v.size() < buffer) return r;
    const uint32_t sub_off = le(v, 8, 2), sub_len = le(v, 10, 2);
    const uint32_t print_off = le(v, 12, 2), print_len = le(v, 14, 2);
    const bool relative = r.tag == kTagSymlink && (le(v, 16, 4) & 1u) != 0;
    auto sub = name_at(v, buffer, sub_off, sub_len);
    auto print = name_at(v, buffer, print_off, print_len);
    const auto& chosen = relative ? ((sub && !sub->empty()) ? sub : print) : ((print && !print->empty()) ? print : sub);
    if (chosen && !chosen->empty()) {
      std::string target = windows_target(*chosen);
      if (!target.empty()) r.symlink_target = std::move(target);
    }
  } else if (r.tag == kTagLxSymlink) {
    // A Linux path of the WSL distribution: absolute ones name its root, not the host's.
    if (v.size() > 12) r.symlink_target = never_absolute(std::string(v.substr(12)));  // version (4 bytes), then UTF-8
  }
  return r;
}

std::optional<std::string> dataless_tag_name(uint32_t tag) {
  if (tag == 0x80000013u) return "data deduplication";
  if (tag == 0x80000017u) return "WOF compression (CompactOS)";
  if (tag == 0xC0000004u || tag == 0x80000006u) return "HSM (offline storage)";
  if ((tag & 0xFFFF0FFFu) == 0x9000001Au) return "cloud files placeholder (OneDrive)";
  return std::nullopt;
}

std::optional<std::string> parse_interix_symlink(std::string_view data) {
  if (!data.starts_with(kInterixSymlinkMagic)) return std::nullopt;
  const std::string_view target = data.substr(kInterixSymlinkMagic.size());
  if (target.size() % 2 != 0) return std::nullopt;
  return never_absolute(utf16le_to_utf8(target.data(), target.size() / 2));
}

}  // namespace sendense::ntfs
