#include "fuse/names.h"

namespace sendense {

namespace {
constexpr std::string_view kSlash = "\xe2\x88\x95";        // U+2215 DIVISION SLASH
constexpr std::string_view kNul = "\xe2\x90\x80";          // U+2400 SYMBOL FOR NULL
constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD
}  // namespace

bool valid_entry_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

std::string escape_entry_name(std::string_view raw) {
  std::string out;
  for (char c : raw) {
    if (c == '/') out += kSlash;
    else if (c == '\0') out += kNul;
    else out += c;
  }
  if (out.empty() || out == "." || out == "..") out += kReplacement;
  return out;
}

bool may_be_escaped(std::string_view shown) {
  return shown.find(kSlash) != std::string_view::npos || shown.find(kNul) != std::string_view::npos ||
         shown.find(kReplacement) != std::string_view::npos;
}

}  // namespace sendense
