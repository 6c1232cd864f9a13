#include "readers/fs/names.h"

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

namespace {

constexpr size_t kMaxShownName = 255;  // what a Linux name may hold (the kernel refuses > 1024 in a readdir)

// `base` + U+FFFD + `tag`, cut (on a UTF-8 boundary) to fit kMaxShownName.
std::string tagged(std::string base, const std::string& tag) {
  const std::string suffix = std::string(kReplacement) + tag;
  if (base.size() + suffix.size() > kMaxShownName) {
    size_t cut = kMaxShownName - suffix.size();
    while (cut > 0 && (static_cast<unsigned char>(base[cut]) & 0xC0) == 0x80) --cut;
    base.resize(cut);
  }
  return base + suffix;
}

}  // namespace

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
  // An escaped name that is too long or already taken is tagged with its
  // position in the directory (stable: a backup never changes), so each
  // raw entry costs O(1) tries whatever a guest put in the directory; only
  // a real name equal to a tagged one forces a further ".k".
  for (size_t i : escaped) {
    std::string name = escape_entry_name(raw[i]);
    if (name.size() > kMaxShownName || !taken.insert(name).second) {
      const std::string base = std::move(name);
      for (size_t k = 0;; ++k) {
        name = tagged(base, k == 0 ? std::to_string(i) : std::to_string(i) + "." + std::to_string(k));
        if (taken.insert(name).second) break;
      }
    }
    out[i] = std::move(name);
  }
  return out;
}

}  // namespace sendense
