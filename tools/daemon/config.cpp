#include "tools/daemon/config.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "readers/kernel/nbd_device.h"

namespace sendense::config {

namespace {

// Bounds keep the millisecond arithmetic of the idle reaper far from overflow.
constexpr long kMaxIdleTimeout = 366L * 24 * 3600;
constexpr long kMaxMounts = 4096;
constexpr long kMaxId = 4294967294L;  // (uid_t)-1 means "no change" to the kernel

long parse_number(const std::string& key, const std::string& value, long min, long max, int base = 10) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(value.c_str(), &end, base);
  if (value.empty() || *end || errno == ERANGE || v < min || v > max || value[0] == '-' || value[0] == '+' ||
      value[0] == ' ') {
    std::ostringstream msg;
    msg << key << " needs a" << (base == 8 ? "n octal" : "") << " number from " << (base == 8 ? std::oct : std::dec)
        << min << " to " << max << ", got '" << value << "'";
    throw ConfigError(msg.str());
  }
  return v;
}

bool parse_bool(const std::string& key, const std::string& value) {
  if (value == "yes" || value == "true" || value == "on" || value == "1") return true;
  if (value == "no" || value == "false" || value == "off" || value == "0") return false;
  throw ConfigError(key + " needs yes or no, got '" + value + "'");
}

void check_one_of(const std::string& key, const std::string& value, std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw ConfigError(key + " needs one of " + list + ", got '" + value + "'");
}

// ADDRESS:PORT with a numeric address (no name lookup in a root daemon's
// start-up): 127.0.0.1:9469 or [::1]:9469.
void check_listen(const std::string& key, const std::string& value) {
  if (value.empty()) return;  // off
  const auto colon = value.rfind(':');
  const std::string why = key + " needs ADDRESS:PORT (e.g. 127.0.0.1:9469) or nothing, got '" + value + "'";
  if (colon == std::string::npos || colon == 0) throw ConfigError(why);
  std::string host = value.substr(0, colon);
  unsigned char buf[16];
  bool ok;
  if (host.front() == '[' && host.back() == ']') ok = ::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), buf) == 1;
  else ok = ::inet_pton(AF_INET, host.c_str(), buf) == 1;
  if (!ok) throw ConfigError(why);
  try {
    parse_number(key + " port", value.substr(colon + 1), 1, 65535);
  } catch (const ConfigError&) {
    throw ConfigError(why);
  }
}

struct Key {
  const char* name;
  const char* default_value;
  std::function<void(const std::string& key, const std::string& value)> check;
};

const std::vector<Key>& table() {
  static const std::vector<Key> keys = {
      {"mountpoint", "", [](const std::string& k, const std::string& v) {
         if (!v.empty() && v[0] != '/') throw ConfigError(k + " needs an absolute path, got '" + v + "'");
       }},
      {"catalog", "/var/lib/sendense-restore/catalog.db", [](const std::string& k, const std::string& v) {
         if (v.empty()) throw ConfigError(k + " needs a path");
       }},
      {"idle-timeout", "3600", [](const std::string& k, const std::string& v) { parse_number(k, v, 1, kMaxIdleTimeout); }},
      {"max-mounts", "8", [](const std::string& k, const std::string& v) { parse_number(k, v, 1, kMaxMounts); }},
      {"attach", "auto", [](const std::string& k, const std::string& v) { check_one_of(k, v, {"userspace", "kernel", "auto"}); }},
      {"nbd-devices", "", [](const std::string& k, const std::string& v) {
         if (v.empty()) return;
         try {
           kernel::parse_nbd_range(v);
         } catch (const std::exception& e) {
           throw ConfigError(k + ": " + e.what());
         }
       }},
      {"no-replay", "no", [](const std::string& k, const std::string& v) { parse_bool(k, v); }},
      {"fuse-options", "", [](const std::string& k, const std::string& v) {
         // The fixed options (ro,nosuid,nodev) come first; these are appended.
         if (v.find_first_of(" \t") != std::string::npos) throw ConfigError(k + " holds a blank: '" + v + "'");
       }},
      {"log-level", "info", [](const std::string& k, const std::string& v) { check_one_of(k, v, {"debug", "info", "warn", "error"}); }},
      {"ntfs-uid", "0", [](const std::string& k, const std::string& v) { parse_number(k, v, 0, kMaxId); }},
      {"ntfs-gid", "0", [](const std::string& k, const std::string& v) { parse_number(k, v, 0, kMaxId); }},
      {"ntfs-dir-mode", "755", [](const std::string& k, const std::string& v) { parse_number(k, v, 0, 07777, 8); }},
      {"ntfs-file-mode", "644", [](const std::string& k, const std::string& v) { parse_number(k, v, 0, 07777, 8); }},
      {"metrics-listen", "", check_listen},
      {"isolation", "worker", [](const std::string& k, const std::string& v) { check_one_of(k, v, {"none", "worker"}); }},
      {"worker-timeout", "30", [](const std::string& k, const std::string& v) { parse_number(k, v, 1, 3600); }},
      {"worker-memory", "1024", [](const std::string& k, const std::string& v) { parse_number(k, v, 64, 1 << 20); }},
      {"cache-budget", "64", [](const std::string& k, const std::string& v) { parse_number(k, v, 1, 1 << 20); }},
  };
  return keys;
}

const Key* find_key(const std::string& name) {
  for (const auto& k : table())
    if (name == k.name) return &k;
  return nullptr;
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

}  // namespace

DaemonConfig::DaemonConfig() {
  for (const auto& k : table()) settings_[k.name] = Setting{k.default_value, "default"};
}

const std::vector<std::string>& DaemonConfig::keys() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& k : table()) out.emplace_back(k.name);
    return out;
  }();
  return names;
}

void DaemonConfig::set(const std::string& key, const std::string& value, const std::string& origin) {
  const Key* k = find_key(key);
  if (!k) throw ConfigError("unknown key '" + key + "'");
  k->check(key, value);
  settings_[key] = Setting{value, origin};
}

void DaemonConfig::load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read: " + std::strerror(errno));
  std::map<std::string, int> seen;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = path + ":" + std::to_string(number);
    const std::string text = trim(line);
    if (text.empty() || text[0] == '#') continue;
    const auto eq = text.find('=');
    if (eq == std::string::npos) throw ConfigError(where + ": expected 'key = value', got '" + text + "'");
    const std::string key = trim(text.substr(0, eq));
    const std::string value = trim(text.substr(eq + 1));
    if (auto it = seen.find(key); it != seen.end())
      throw ConfigError(where + ": " + key + " is already set on line " + std::to_string(it->second));
    seen[key] = number;
    try {
      set(key, value, where);
    } catch (const ConfigError& e) {
      throw ConfigError(where + ": " + e.what());
    }
  }
  if (in.bad()) throw ConfigError(path + ": read error");
}

std::vector<std::pair<std::string, Setting>> DaemonConfig::effective() const {
  std::vector<std::pair<std::string, Setting>> out;
  for (const auto& k : table()) out.emplace_back(k.name, settings_.at(k.name));
  return out;
}

DaemonOptions DaemonConfig::options() const {
  auto get = [&](const char* key) -> const std::string& { return settings_.at(key).value; };
  DaemonOptions o;
  o.mountpoint = get("mountpoint");
  o.catalog_path = get("catalog");
  o.idle_timeout = std::chrono::seconds(parse_number("idle-timeout", get("idle-timeout"), 1, kMaxIdleTimeout));
  o.max_mounts = static_cast<size_t>(parse_number("max-mounts", get("max-mounts"), 1, kMaxMounts));
  o.attach_mode = get("attach");
  o.nbd_devices = get("nbd-devices");
  o.fs_open.replay_journal = !parse_bool("no-replay", get("no-replay"));
  std::istringstream fuse_opts(get("fuse-options"));
  for (std::string opt; std::getline(fuse_opts, opt, ',');)
    if (!opt.empty()) o.fuse_options.push_back(opt);
  o.fs_open.ntfs_uid = static_cast<uint32_t>(parse_number("ntfs-uid", get("ntfs-uid"), 0, kMaxId));
  o.fs_open.ntfs_gid = static_cast<uint32_t>(parse_number("ntfs-gid", get("ntfs-gid"), 0, kMaxId));
  o.fs_open.ntfs_dir_mode = static_cast<uint32_t>(parse_number("ntfs-dir-mode", get("ntfs-dir-mode"), 0, 07777, 8));
  o.fs_open.ntfs_file_mode = static_cast<uint32_t>(parse_number("ntfs-file-mode", get("ntfs-file-mode"), 0, 07777, 8));
  o.metrics_listen = get("metrics-listen");
  o.isolation = get("isolation");
  o.worker_timeout = std::chrono::seconds(parse_number("worker-timeout", get("worker-timeout"), 1, 3600));
  o.worker_memory_mib = static_cast<uint64_t>(parse_number("worker-memory", get("worker-memory"), 64, 1 << 20));
  o.fs_open.cache_budget_bytes = static_cast<uint64_t>(parse_number("cache-budget", get("cache-budget"), 1, 1 << 20)) << 20;
  return o;
}

std::string key_for_flag(const std::string& flag) {
  if (flag == "-o") return "fuse-options";
  // The mount point is positional; --no-replay takes no value.
  if (flag == "--mountpoint" || flag == "--no-replay" || flag == "--fuse-options") return "";
  if (flag.size() > 2 && flag.starts_with("--") && find_key(flag.substr(2))) return flag.substr(2);
  return "";
}

}  // namespace sendense::config
