// Command-line arguments of `sendense-restore`: positionals and --options,
// checked against what each command accepts.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace sendense::cli {

// A mistake in the command line: printed with a hint, exit status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // "--catalog" -> "/x.db"
  std::set<std::string> flags;                // "--json"
  std::map<std::string, std::vector<std::string>> repeated;  // every value of a repeatable option, in order

  std::optional<std::string> value(const std::string& name) const;
  std::string value_or(const std::string& name, const std::string& fallback) const;
  std::string required(const std::string& name) const;  // throws UsageError
  bool flag(const std::string& name) const { return flags.contains(name); }
  std::vector<std::string> all(const std::string& name) const;  // every value given (repeatable options)
};

// Parses argv[first..argc). `value_options` take a value ("--x V" or
// "--x=V"), `flag_options` do not. "--" ends the options. Throws UsageError
// for an unknown option, a missing value, or a repeated option (unless it is
// in `repeatable`: then every value is kept in `repeated`, the first in `values`).
Args parse_args(int argc, char** argv, int first, const std::set<std::string>& value_options,
                const std::set<std::string>& flag_options, const std::set<std::string>& repeatable = {});

// The value of --format: "qcow2", "raw" or absent; anything else is a UsageError.
std::optional<std::string> format_option(const Args& args);

// Exactly `count` positionals named `names` (for the message), else UsageError.
void expect_positionals(const Args& args, const std::vector<std::string>& names);

}  // namespace sendense::cli
