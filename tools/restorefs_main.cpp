// sendense-restorefs MOUNTPOINT --catalog DB [--idle-timeout SECONDS]
//   [--max-mounts N] [--attach userspace|kernel|auto] [--nbd-devices A-B] [--no-replay] [-f] [-o FUSE_OPTION]... [--log-level debug|info|warn|error]
//   [--ntfs-uid N] [--ntfs-gid N] [--ntfs-dir-mode OCTAL] [--ntfs-file-mode OCTAL]
// Parses the command line and runs the daemon; nothing else lives here.
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "fuse/daemon.h"
#include "readers/common/log.h"
#include "readers/kernel/nbd_device.h"

namespace {

constexpr const char* kUsage =
    "usage: sendense-restorefs MOUNTPOINT --catalog DB [--idle-timeout SECONDS] [--max-mounts N]\n"
    "                          [--attach userspace|kernel|auto] [--nbd-devices FIRST-LAST] [--no-replay] [-f] [-o FUSE_OPTION]... [--log-level debug|info|warn|error]\n"
    "                          [--ntfs-uid N] [--ntfs-gid N] [--ntfs-dir-mode OCTAL] [--ntfs-file-mode OCTAL]\n"
    "Serves every backup in the catalog as a read-only tree under MOUNTPOINT.\n"
    "  --catalog DB          SQLite catalog (default /var/lib/sendense-restore/catalog.db)\n"
    "  --idle-timeout S      detach a backup with no open files after S seconds idle (default 3600)\n"
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
    "  -f                    stay in the foreground\n"
    "  -o OPTION             extra FUSE mount option (repeatable)\n"
    "  --log-level LEVEL     default info\n"
    "  --ntfs-uid N, --ntfs-gid N   owner shown for NTFS files and folders (default 0, 0)\n"
    "  --ntfs-dir-mode OCTAL        permissions of NTFS folders (default 755)\n"
    "  --ntfs-file-mode OCTAL       permissions of NTFS files (default 644; symlinks are 777)\n";

long parse_number(const char* flag, const char* value, long min, long max, int base = 10) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(value, &end, base);
  if (!*value || *end || errno == ERANGE || v < min || v > max) {
    std::cerr << "sendense-restorefs: " << flag << " needs a" << (base == 8 ? "n octal" : "") << " number from "
              << (base == 8 ? std::oct : std::dec) << min << " to " << max << ", got '" << value << "'\n";
    std::exit(2);
  }
  return v;
}

// Bounds keep the millisecond arithmetic of the idle reaper far from overflow.
constexpr long kMaxIdleTimeout = 366L * 24 * 3600;
constexpr long kMaxMounts = 4096;
constexpr long kMaxId = 4294967294L;  // (uid_t)-1 means "no change" to the kernel

}  // namespace

int main(int argc, char** argv) {
  sendense::DaemonOptions options;
  options.catalog_path = "/var/lib/sendense-restore/catalog.db";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::cerr << "sendense-restorefs: " << arg << " needs a value\n" << kUsage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (arg == "--catalog") {
      options.catalog_path = value();
    } else if (arg == "--idle-timeout") {
      options.idle_timeout = std::chrono::seconds(parse_number("--idle-timeout", value(), 1, kMaxIdleTimeout));
    } else if (arg == "--max-mounts") {
      options.max_mounts = static_cast<size_t>(parse_number("--max-mounts", value(), 1, kMaxMounts));
    } else if (arg == "--attach") {
      options.attach_mode = value();
      if (options.attach_mode != "userspace" && options.attach_mode != "kernel" && options.attach_mode != "auto") {
        std::cerr << "sendense-restorefs: --attach needs userspace, kernel or auto, got '" << options.attach_mode
                  << "'\n";
        std::exit(2);
      }
    } else if (arg == "--nbd-devices") {
      options.nbd_devices = value();
      try {
        sendense::kernel::parse_nbd_range(options.nbd_devices);
      } catch (const std::exception& e) {
        std::cerr << "sendense-restorefs: " << e.what() << "\n";
        std::exit(2);
      }
    } else if (arg == "--no-replay") {
      options.fs_open.replay_journal = false;
    } else if (arg == "-f") {
      options.foreground = true;
    } else if (arg == "-o") {
      options.fuse_options.emplace_back(value());
    } else if (arg == "--ntfs-uid") {
      options.fs_open.ntfs_uid = static_cast<uint32_t>(parse_number("--ntfs-uid", value(), 0, kMaxId));
    } else if (arg == "--ntfs-gid") {
      options.fs_open.ntfs_gid = static_cast<uint32_t>(parse_number("--ntfs-gid", value(), 0, kMaxId));
    } else if (arg == "--ntfs-dir-mode") {
      options.fs_open.ntfs_dir_mode = static_cast<uint32_t>(parse_number("--ntfs-dir-mode", value(), 0, 07777, 8));
    } else if (arg == "--ntfs-file-mode") {
      options.fs_open.ntfs_file_mode = static_cast<uint32_t>(parse_number("--ntfs-file-mode", value(), 0, 07777, 8));
    } else if (arg == "--log-level") {
      std::string level = value();
      using sendense::log::Level;
      if (level == "debug") sendense::log::set_level(Level::debug);
      else if (level == "info") sendense::log::set_level(Level::info);
      else if (level == "warn") sendense::log::set_level(Level::warn);
      else if (level == "error") sendense::log::set_level(Level::error);
      else {
        std::cerr << "sendense-restorefs: unknown log level '" << level << "'\n";
        return 2;
      }
    } else if (!arg.empty() && arg[0] == '-') {
      std::cerr << "sendense-restorefs: unknown option " << arg << "\n" << kUsage;
      return 2;
    } else if (options.mountpoint.empty()) {
      options.mountpoint = arg;
    } else {
      std::cerr << "sendense-restorefs: unexpected argument " << arg << "\n" << kUsage;
      return 2;
    }
  }
  if (options.mountpoint.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  return sendense::run_daemon(options);
}
