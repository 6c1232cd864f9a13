#include "readers/fs/ntfs/ntfs_names.h"

namespace sendense::ntfs {

namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

void append_escaped_unit(std::string& out, uint16_t unit) {
  static constexpr char kHex[] = "0123456789abcdef";
  append_utf8(out, 0xfffd);
  for (int shift = 12; shift >= 0; shift -= 4) out.push_back(kHex[(unit >> shift) & 0xf]);
}

}  // namespace

std::string utf16le_to_utf8(const void* units, size_t count) {
  const auto* p = static_cast<const unsigned char*>(units);
  auto unit_at = [p](size_t i) { return static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)); };
  std::string out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const uint16_t u = unit_at(i);
    if (u >= 0xd800 && u <= 0xdbff && i + 1 < count) {
      const uint16_t low = unit_at(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) {
        append_utf8(out, 0x10000 + ((static_cast<uint32_t>(u) - 0xd800) << 10) + (low - 0xdc00));
        ++i;
        continue;
      }
    }
    if (u >= 0xd800 && u <= 0xdfff) {
      append_escaped_unit(out, u);
      continue;
    }
    append_utf8(out, u);
  }
  return out;
}

}  // namespace sendense::ntfs
