// LVM2's text configuration format, as the VG metadata is stored on a PV:
//   key = 12 | key = "text" | key = [ "a", 1 ] | name { ... }   # comments
// A bounded recursive-descent parser: every limit below is checked before
// anything is allocated, so hostile metadata gives Error(EIO), never a deep
// recursion or a huge allocation. Private to readers/volume (see lvm.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sendense::lvm_detail {

struct ConfigValue {
  enum class Kind { integer, real, string, array, section };
  Kind kind = Kind::integer;
  int64_t integer = 0;
  std::string text;                 // a string's content, or a real number as written
  std::vector<ConfigValue> items;   // array elements, or a section's values (keys[i] -> items[i])
  std::vector<std::string> keys;    // section only

  // The value of `key` in this section (the first one), or nullptr.
  const ConfigValue* find(std::string_view key) const;
};

struct ConfigLimits {
  size_t max_text = 16u << 20;   // bytes of metadata text
  size_t max_depth = 16;         // nested sections and arrays
  size_t max_values = 1u << 20;  // every value, key and array element counted
  size_t max_string = 4096;      // one string or name
};

// Parses `text` into its top-level section. Throws Error(EIO) naming `where`,
// the line and what is wrong: unterminated strings or sections, a value that
// is not a number/string/array, a limit exceeded, an integer out of range.
ConfigValue parse_config(std::string_view text, const std::string& where, const ConfigLimits& limits = {});

}  // namespace sendense::lvm_detail
