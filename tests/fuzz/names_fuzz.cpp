// Fuzz target: the escaping of names shown in the tree (readers/fs/names.cpp).
// Input: raw names separated by 0xFF bytes (never part of valid UTF-8).
// Checks the contract of shown_names: one name per entry, valid names (and
// the first "." and "..") unchanged, every other one escaped to a valid,
// unique name of at most 255 bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "readers/fs/names.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  std::vector<std::string> raw(1);
  for (size_t i = 0; i < size && raw.size() <= 4096; ++i) {
    if (data[i] == 0xff)
      raw.emplace_back();
    else
      raw.back().push_back(static_cast<char>(data[i]));
  }
  for (const std::string& r : raw) {
    if (!valid_entry_name(r)) {
      const std::string e = escape_entry_name(r);
      if (!valid_entry_name(e) || !may_be_escaped(e)) std::abort();
    }
  }
  const std::vector<std::string> shown = shown_names(raw);
  if (shown.size() != raw.size()) std::abort();
  // Names shown as they are: valid ones, and the first "." and "..".
  // (A damaged directory may hold the same valid name twice: both stay.)
  std::set<std::string> as_is;
  std::vector<bool> kept(raw.size());
  bool dot = false, dotdot = false;
  for (size_t i = 0; i < raw.size(); ++i) {
    const bool first_dot = raw[i] == "." && !dot;
    const bool first_dotdot = raw[i] == ".." && !dotdot;
    dot |= raw[i] == ".";
    dotdot |= raw[i] == "..";
    kept[i] = first_dot || first_dotdot || valid_entry_name(raw[i]);
    if (kept[i]) {
      if (shown[i] != raw[i]) std::abort();
      as_is.insert(raw[i]);
    }
  }
  // Every other entry: a valid name of at most 255 bytes, unique.
  std::set<std::string> escaped;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (kept[i]) continue;
    const std::string& s = shown[i];
    if (s.size() > 255 || !valid_entry_name(s) || !may_be_escaped(s)) std::abort();
    if (as_is.count(s) != 0 || !escaped.insert(s).second) std::abort();
  }
  return 0;
}
