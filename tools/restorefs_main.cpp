// sendense-restorefs [MOUNTPOINT] [--config FILE] [--check-config] [--version] [--KEY VALUE]... [-f]
// Reads the configuration file, lets the command line override it, and runs
// the daemon; nothing else lives here (the settings are tools/daemon/config.h).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "fuse/daemon.h"
#include "fuse/fuse_holder.h"
#include "readers/common/log.h"
#include "tools/daemon/config.h"

#if defined(__SANITIZE_ADDRESS__)
// libfuse frees the mount point it copies in fuse_session_mount() only in
// fuse_session_unmount(), which a daemon that leaves its mount to the holder
// (fuse/fuse_holder.h) never calls: 12 bytes, once per mount.
extern "C" const char* __lsan_default_suppressions() { return "leak:fuse_session_mount\n"; }
#endif

namespace {

constexpr const char* kUsage =
    "usage: sendense-restorefs [MOUNTPOINT] [--config FILE] [--catalog DB] [--idle-timeout SECONDS] [--max-mounts N]\n"
    "                          [--attach userspace|kernel|auto] [--nbd-devices FIRST-LAST] [--no-replay] [-f]\n"
    "                          [-o FUSE_OPTION]... [--log-level debug|info|warn|error] [--metrics-listen ADDRESS:PORT]\n"
    "                          [--ntfs-uid N] [--ntfs-gid N] [--ntfs-dir-mode OCTAL] [--ntfs-file-mode OCTAL]\n"
    "                          [--isolation worker|none] [--worker-timeout SECONDS] [--worker-memory MIB]\n"
    "                          [--cache-budget MIB]\n"
    "       sendense-restorefs --unmount [MOUNTPOINT] [--config FILE]\n"
    "       sendense-restorefs --check-config [--config FILE] [OPTIONS]\n"
    "       sendense-restorefs --version\n"
    "Serves every backup in the catalog as a read-only tree under MOUNTPOINT.\n"
    "Settings come from the configuration file (keys named like the options, without\n"
    "the dashes: `idle-timeout = 600`, `mountpoint = /mnt/sendense/restore`); options\n"
    "given here override it.\n"
    "  --config FILE         configuration file (default /etc/sendense-restore/restorefs.conf;\n"
    "                        the default one may be missing, one named here must exist)\n"
    "  --unmount             take the tree (and every tenant view) down for good; a stopped daemon\n"
    "                        (SIGTERM, a crash) leaves it mounted for the next start to take over\n"
    "  --check-config        check the configuration and the options, print the effective\n"
    "                        settings with where each comes from, and exit (0 ok, 2 error)\n"
    "  --version             print the version and exit\n"
    "  --catalog DB          SQLite catalog (default /var/lib/sendense-restore/catalog.db)\n"
    "  --idle-timeout S      detach a backup after S seconds with no request (default 3600)\n"
    "  --max-mounts N        at most N backups attached at once (default 8)\n"
    "  --attach MODE         userspace: every volume read by our readers; kernel: every volume the\n"
    "                        kernel mounts (ext2/3/4, XFS, btrfs) through loop devices, read-only, as\n"
    "                        root; auto (default): the kernel only where no userspace reader exists\n"
    "  --nbd-devices A-B     kernel backend through qemu-nbd on /dev/nbdA../dev/nbdB (e.g. 0-7) where\n"
    "                        the nbd module is loaded (read-only devices: journals not replayed);\n"
    "                        default: qemu-storage-daemon + loop devices (journals replayed into a\n"
    "                        throwaway overlay)\n"
    "  --no-replay           show ext3/ext4 volumes as stored, without replaying a journal that\n"
    "                        needs recovery (forensics; by default it is replayed in memory)\n"
    "  -f                    stay in the foreground (systemd: READY=1 once mounted, watchdog)\n"
    "  -o OPTION             extra FUSE mount option (repeatable; replaces fuse-options of the file)\n"
    "  --log-level LEVEL     default info\n"
    "  --metrics-listen ADDRESS:PORT  serve Prometheus metrics at http://ADDRESS:PORT/metrics\n"
    "                        (numeric address, e.g. 127.0.0.1:9469; default: off)\n"
    "  --ntfs-uid N, --ntfs-gid N   owner shown for NTFS files and folders (default 0, 0)\n"
    "  --ntfs-dir-mode OCTAL        permissions of NTFS folders (default 755)\n"
    "  --ntfs-file-mode OCTAL       permissions of NTFS files (default 644; symlinks are 777)\n"
    "  --isolation MODE      worker (default): each attached backup's parsers run in a sandboxed worker\n"
    "                        process (unprivileged, seccomp, namespaces, rlimits); none: in the daemon\n"
    "  --worker-timeout S    a worker that leaves a request unanswered for S seconds is killed (default 30)\n"
    "  --worker-memory MIB   address-space limit of each worker (default 1024)\n"
    "  --cache-budget MIB    memory all caches of one attached backup may keep together (default 64)\n";

int usage_error(const std::string& message) {
  std::cerr << "sendense-restorefs: " << message << "\n" << kUsage;
  return 2;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 || errno != ENOENT;
}

void set_log_level(const std::string& level) {
  using sendense::log::Level;
  if (level == "debug") sendense::log::set_level(Level::debug);
  else if (level == "info") sendense::log::set_level(Level::info);
  else if (level == "warn") sendense::log::set_level(Level::warn);
  else sendense::log::set_level(Level::error);
}

}  // namespace

int main(int argc, char** argv) {
  namespace config = sendense::config;
  // Started by the daemon (fuse/fuse_holder.h) with its socket as fd 3.
  if (argc == 3 && std::string_view(argv[1]) == "--fuse-holder") sendense::FuseHolder::serve(3);
  std::string config_path;
  bool check_config = false, foreground = false, unmount = false;
  std::vector<std::pair<std::string, std::string>> overrides;  // applied after the file, in order
  std::string fuse_options;
  bool have_fuse_options = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        usage_error(arg + " needs a value");
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (arg == "--version") {
      std::cout << "sendense-restorefs " << SENDENSE_VERSION << "\n";
      return 0;
    } else if (arg == "--config") {
      config_path = value();
    } else if (arg == "--check-config") {
      check_config = true;
    } else if (arg == "--unmount") {
      unmount = true;
    } else if (arg == "-f") {
      foreground = true;
    } else if (arg == "--no-replay") {
      overrides.emplace_back("no-replay", "yes");
    } else if (arg == "-o") {
      const std::string opt = value();
      fuse_options += (have_fuse_options ? "," : "") + opt;
      have_fuse_options = true;
    } else if (const std::string key = config::key_for_flag(arg); !key.empty()) {
      overrides.emplace_back(key, value());
    } else if (!arg.empty() && arg[0] == '-') {
      return usage_error("unknown option " + arg);
    } else if (std::none_of(overrides.begin(), overrides.end(), [](const auto& o) { return o.first == "mountpoint"; })) {
      // Relative on the command line is fine (the daemon makes it absolute);
      // the file needs an absolute path because it has no working directory.
      overrides.emplace_back("mountpoint", std::filesystem::absolute(arg).lexically_normal().string());
    } else {
      return usage_error("unexpected argument " + arg);
    }
  }
  if (have_fuse_options) overrides.emplace_back("fuse-options", fuse_options);

  config::DaemonConfig settings;
  try {
    if (!config_path.empty()) settings.load_file(config_path);
    else if (exists(config::kDefaultConfigPath)) settings.load_file(config::kDefaultConfigPath);
    for (const auto& [key, val] : overrides) {
      try {
        settings.set(key, val, "command line");
      } catch (const config::ConfigError& e) {
        throw config::ConfigError(std::string("command line: ") + e.what());
      }
    }
  } catch (const config::ConfigError& e) {
    std::cerr << "sendense-restorefs: " << e.what() << "\n";
    return 2;
  }

  if (check_config) {
    std::cout << "# sendense-restorefs " << SENDENSE_VERSION << ": effective settings ("
              << (config_path.empty() ? exists(config::kDefaultConfigPath) ? config::kDefaultConfigPath
                                                                           : "no configuration file"
                                      : config_path.c_str())
              << ")\n";
    for (const auto& [key, setting] : settings.effective())
      std::cout << key << " = " << setting.value << "    # " << setting.origin << "\n";
    if (settings.options().mountpoint.empty()) {
      std::cerr << "sendense-restorefs: no mount point (set mountpoint in the configuration file or give MOUNTPOINT)\n";
      return 2;
    }
    return 0;
  }

  sendense::DaemonOptions options = settings.options();
  if (options.mountpoint.empty())
    return usage_error("no mount point (set mountpoint in the configuration file or give MOUNTPOINT)");
  options.foreground = foreground;
  set_log_level(settings.log_level());
  if (unmount) return sendense::unmount_tree(options.mountpoint);
  return sendense::run_daemon(options);
}
