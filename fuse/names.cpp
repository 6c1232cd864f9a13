#include "fuse/names.h"

#include <unordered_set>

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

std::vector<std::string> shown_names(const std::vector<std::string>& raw) {
  std::vector<std::string> out(raw.size());
  std::unordered_set<std::string> taken;
  std::vector<size_t> escaped;
  bool dot = false, dotdot = false;
  for (size_t i = 0; i < raw.size(); ++i) {
    const std::string& name = raw[i];
    const bool first_dot = name == "." && !dot;
    const bool first_dotdot = name == ".." && !dotdot;
    dot |= first_dot;
    dotdot |= first_dotdot;
    if (first_dot || first_dotdot || valid_entry_name(name)) {
      out[i] = name;
      taken.insert(name);
    } else {
      escaped.push_back(i);
    }
  }
  for (size_t i : escaped) {
    std::string name = escape_entry_name(raw[i]);
    while (!taken.insert(name).second) name += kReplacement;
    out[i] = std::move(name);
  }
  return out;
}

}  // namespace sendense
