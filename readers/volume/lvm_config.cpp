// The LVM2 text format parser (lvm_config.h). Grammar, as lib/config writes it:
//   section := { key '=' value | key '{' section '}' }
//   value   := integer | real | "string" | '[' [ value { ',' value } ] ']'
// Unquoted keys use the characters of LVM names; '#' starts a comment.
#include "readers/volume/lvm_config.h"

#include <limits>

#include "readers/common/error.h"

namespace sendense::lvm_detail {

const ConfigValue* ConfigValue::find(std::string_view key) const {
  if (kind != Kind::section) return nullptr;
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return &items[i];
  return nullptr;
}

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& where, const ConfigLimits& limits)
      : s_(text), where_(where), limits_(limits) {}

  ConfigValue parse_file() {
    if (s_.size() > limits_.max_text)
      fail("metadata text of " + std::to_string(s_.size()) + " bytes exceeds the limit of " +
           std::to_string(limits_.max_text));
    ConfigValue root;
    root.kind = ConfigValue::Kind::section;
    parse_section_body(root, 0, /*top=*/true);
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(EIO, "LVM metadata line " + std::to_string(line_) + ": " + what, where_);
  }

  void count() {
    if (++values_ > limits_.max_values) fail("more than " + std::to_string(limits_.max_values) + " values");
  }

  void skip_space() {
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (c == '\n') {
        ++line_;
        ++pos_;
      } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < s_.size() && s_[pos_] != '\n') ++pos_;
      } else if (c == '\0') {
        // The metadata buffer is NUL-padded on disk; a NUL ends the text.
        pos_ = s_.size();
      } else {
        break;
      }
    }
  }

  static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.' || c == '+';
  }

  std::string parse_key() {
    if (pos_ < s_.size() && s_[pos_] == '"') return parse_string();
    const size_t start = pos_;
    while (pos_ < s_.size() && name_char(s_[pos_])) {
      if (pos_ - start >= limits_.max_string) fail("name longer than " + std::to_string(limits_.max_string));
      ++pos_;
    }
    if (pos_ == start) fail(pos_ < s_.size() ? "unexpected character '" + printable(s_[pos_]) + "'" : "unexpected end");
    return std::string(s_.substr(start, pos_ - start));
  }

  static std::string printable(char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) return std::string(1, c);
    static const char* hex = "0123456789abcdef";
    return std::string("\\x") + hex[u >> 4] + hex[u & 15];
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') break;
      if (c == '\n') ++line_;
      if (c == '\\') {
        if (pos_ >= s_.size()) fail("unterminated string");
        c = s_[pos_++];
      }
      if (out.size() >= limits_.max_string) fail("string longer than " + std::to_string(limits_.max_string));
      out += c;
    }
    return out;
  }

  ConfigValue parse_number() {
    const size_t start = pos_;
    if (s_[pos_] == '-' || s_[pos_] == '+') ++pos_;
    bool real = false;
    while (pos_ < s_.size() && ((s_[pos_] >= '0' && s_[pos_] <= '9') || s_[pos_] == '.')) {
      if (s_[pos_] == '.') real = true;
      if (pos_ - start > 64) fail("number too long");
      ++pos_;
    }
    const std::string_view t = s_.substr(start, pos_ - start);
    ConfigValue v;
    if (real) {
      v.kind = ConfigValue::Kind::real;
      v.text = std::string(t);
      return v;
    }
    const bool negative = t[0] == '-';
    const std::string_view digits = (t[0] == '-' || t[0] == '+') ? t.substr(1) : t;
    if (digits.empty()) fail("a sign without a number");
    uint64_t magnitude = 0;
    for (char d : digits) {
      const auto digit = static_cast<uint64_t>(d - '0');
      if (magnitude > (std::numeric_limits<uint64_t>::max() - digit) / 10) fail("integer out of range");
      magnitude = magnitude * 10 + digit;
    }
    const uint64_t max = negative ? uint64_t{1} << 63 : static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (magnitude > max) fail("integer out of range");
    v.kind = ConfigValue::Kind::integer;
    v.integer = negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
    return v;
  }

  ConfigValue parse_value(size_t depth) {
    skip_space();
    if (pos_ >= s_.size()) fail("value expected, end of text found");
    count();
    const char c = s_[pos_];
    if (c == '"') {
      ConfigValue v;
      v.kind = ConfigValue::Kind::string;
      v.text = parse_string();
      return v;
    }
    if (c == '[') {
      if (depth + 1 > limits_.max_depth) fail("nested deeper than " + std::to_string(limits_.max_depth));
      ++pos_;
      ConfigValue v;
      v.kind = ConfigValue::Kind::array;
      skip_space();
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return v;
      }
      while (true) {
        v.items.push_back(parse_value(depth + 1));
        skip_space();
        if (pos_ >= s_.size()) fail("unterminated array");
        if (s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (s_[pos_] == ']') {
          ++pos_;
          return v;
        }
        fail("',' or ']' expected in array, found '" + printable(s_[pos_]) + "'");
      }
    }
    if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.') return parse_number();
    fail("value expected, found '" + printable(c) + "'");
  }

  void parse_section_body(ConfigValue& section, size_t depth, bool top) {
    while (true) {
      skip_space();
      if (pos_ >= s_.size()) {
        if (!top) fail("unterminated section");
        return;
      }
      if (s_[pos_] == '}') {
        if (top) fail("'}' without a section");
        ++pos_;
        return;
      }
      count();
      std::string key = parse_key();
      skip_space();
      if (pos_ >= s_.size()) fail("'=' or '{' expected after '" + key + "', end of text found");
      if (s_[pos_] == '{') {
        if (depth + 1 > limits_.max_depth) fail("nested deeper than " + std::to_string(limits_.max_depth));
        ++pos_;
        ConfigValue child;
        child.kind = ConfigValue::Kind::section;
        parse_section_body(child, depth + 1, false);
        section.keys.push_back(std::move(key));
        section.items.push_back(std::move(child));
      } else if (s_[pos_] == '=') {
        ++pos_;
        ConfigValue v = parse_value(depth);
        section.keys.push_back(std::move(key));
        section.items.push_back(std::move(v));
      } else {
        fail("'=' or '{' expected after '" + key + "', found '" + printable(s_[pos_]) + "'");
      }
    }
  }

  std::string_view s_;
  const std::string& where_;
  const ConfigLimits& limits_;
  size_t pos_ = 0;
  size_t line_ = 1;
  size_t values_ = 0;
};

}  // namespace

ConfigValue parse_config(std::string_view text, const std::string& where, const ConfigLimits& limits) {
  return Parser(text, where, limits).parse_file();
}

}  // namespace sendense::lvm_detail
