// The daemon's settings: one table of keys shared by the configuration file
// (/etc/sendense-restore/restorefs.conf, `key = value`) and the command line
// (--key VALUE), so both accept exactly the same values and the same checks.
// Later sources override earlier ones: built-in default < file < command line.
//
// File format: one `key = value` per line; `#` starts a comment line; blank
// lines are ignored; a key may appear once per file. Values are taken as
// written after trimming (no quoting). Every mistake is a ConfigError whose
// message names the file and line.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuse/daemon.h"

namespace sendense::config {

inline constexpr const char* kDefaultConfigPath = "/etc/sendense-restore/restorefs.conf";

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Setting {
  std::string value;
  std::string origin;  // "default", "FILE:LINE" or "command line"
};

class DaemonConfig {
 public:
  DaemonConfig();  // every key at its default

  // Checks and sets one key; throws ConfigError("KEY: why") for an unknown
  // key or a bad value. `origin` is shown by --check-config.
  void set(const std::string& key, const std::string& value, const std::string& origin);

  // Reads `path`. Throws ConfigError("PATH:LINE: why"), or "PATH: why" when it
  // cannot be read.
  void load_file(const std::string& path);

  // The effective settings in a stable order (the order of the table).
  std::vector<std::pair<std::string, Setting>> effective() const;

  // The options run_daemon() takes (every value was checked by set()). An
  // empty mount point is left to the caller: --check-config reports it.
  DaemonOptions options() const;
  std::string log_level() const { return settings_.at("log-level").value; }

  static const std::vector<std::string>& keys();

 private:
  std::map<std::string, Setting> settings_;
};

// "--idle-timeout" -> "idle-timeout" when it names a key of the table, "-o"
// -> "fuse-options"; else "".
std::string key_for_flag(const std::string& flag);

}  // namespace sendense::config
