#include "fuse/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "catalog/catalog.h"
#include "fuse/attach_manager.h"
#include "fuse/catalog_view.h"
#include "fuse/fuse_ops.h"
#include "fuse/restore_tree.h"
#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace {

constexpr const char* kFsName = "sendense-restore";

// One daemon per catalog: a second one would fight over restore_mounts.
int take_instance_lock(const std::string& catalog_path) {
  const std::string path = catalog_path + ".lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw sys_error("cannot open lock file", path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    throw Error(EBUSY, "another sendense-restorefs serves this catalog", path);
  }
  return fd;
}

// True if /proc/self/mountinfo lists a mount of ours at `mountpoint`.
bool our_mount_at(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options ... - fstype source superopts
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point != mountpoint) continue;
    auto dash = line.find(" - ");
    if (dash != std::string::npos && line.find(kFsName, dash) != std::string::npos) return true;
  }
  return false;
}

// A mount left by a crashed run answers ENOTCONN; we hold the instance lock,
// so any mount of ours at this point is dead. Detach it lazily.
void clear_dead_mount(const std::string& mountpoint) {
  struct stat st {};
  const bool dead = ::stat(mountpoint.c_str(), &st) != 0 && errno == ENOTCONN;
  if (!dead && !our_mount_at(mountpoint)) return;
  if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0)
    throw sys_error("cannot clear the stale mount left by a previous run", mountpoint);
  log::info("stale_mount_cleared", {{"mountpoint", mountpoint}});
}

class Housekeeper {
 public:
  Housekeeper(const DaemonOptions& options, CatalogView& view, AttachManager& manager)
      : options_(options), view_(view), manager_(manager), thread_([this] { run(); }) {}
  ~Housekeeper() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void run() {
    using clock = std::chrono::steady_clock;
    auto next_refresh = clock::now() + options_.refresh_interval;
    auto next_flush = clock::now() + options_.flush_interval;
    const auto tick = std::min<std::chrono::milliseconds>(
        std::chrono::milliseconds(500), std::chrono::duration_cast<std::chrono::milliseconds>(options_.idle_timeout) / 2 +
                                            std::chrono::milliseconds(1));
    std::unique_lock lock(mutex_);
    while (!cv_.wait_for(lock, tick, [this] { return stop_; })) {
      lock.unlock();
      try {
        manager_.detach_idle();
        if (clock::now() >= next_refresh) {
          for (const auto& gone : view_.refresh()) manager_.detach(gone, "removed");
          next_refresh = clock::now() + options_.refresh_interval;
        }
        if (clock::now() >= next_flush) {
          manager_.flush_access_times();
          next_flush = clock::now() + options_.flush_interval;
        }
      } catch (const std::exception& e) {
        log::error("housekeeping_failed", {{"error", e.what()}});
      }
      lock.lock();
    }
  }

  const DaemonOptions& options_;
  CatalogView& view_;
  AttachManager& manager_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

std::string mount_options(const DaemonOptions& options) {
  // nosuid,nodev: setuid bits and device nodes in a backup are shown, never honoured.
  std::string opts = std::string("ro,nosuid,nodev,default_permissions,fsname=") + kFsName + ",subtype=" + kFsName;
  if (::geteuid() == 0) opts += ",allow_other";
  for (const auto& o : options.fuse_options) opts += "," + o;
  return opts;
}

}  // namespace

int run_daemon(const DaemonOptions& options) {
  std::string mountpoint;
  int lock_fd = -1;
  std::unique_ptr<Catalog> catalog;
  try {
    std::filesystem::create_directories(options.mountpoint);
    mountpoint = std::filesystem::canonical(options.mountpoint).string();
  } catch (const std::exception& e) {
    // canonical() fails on a dead FUSE mount (ENOTCONN): use the path as given.
    mountpoint = std::filesystem::absolute(options.mountpoint).lexically_normal().string();
  }
  try {
    lock_fd = take_instance_lock(options.catalog_path);
    catalog = std::make_unique<Catalog>(options.catalog_path);
    for (const auto& row : catalog->reconcile_mounts(mountpoint))
      log::info("reconciled", {{"backup", row.backup_id}, {"mount_id", row.id}, {"was", row.status}});
    clear_dead_mount(mountpoint);
  } catch (const std::exception& e) {
    log::error("startup_failed", {{"error", e.what()}});
    if (lock_fd >= 0) ::close(lock_fd);
    return 1;
  }

  CatalogView view(*catalog);
  view.refresh();
  AttachOptions attach_options;
  attach_options.idle_timeout = options.idle_timeout;
  attach_options.max_mounts = options.max_mounts;
  attach_options.mount_path = mountpoint;
  AttachManager manager(*catalog, view, attach_options);
  RestoreTree tree(view, manager, TreeTimeouts{});

  const std::string opts = mount_options(options);
  std::vector<const char*> argv = {"sendense-restorefs", "-o", opts.c_str()};
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
  fuse_lowlevel_ops ops = make_fuse_operations();
  std::unique_ptr<fuse_session, SessionDeleter> se(fuse_session_new(&args, &ops, sizeof ops, &tree));
  fuse_opt_free_args(&args);
  if (!se) {
    log::error("startup_failed", {{"error", "fuse_session_new failed (bad -o option?)"}, {"options", opts}});
    ::close(lock_fd);
    return 1;
  }
  if (fuse_set_signal_handlers(se.get()) != 0 || fuse_session_mount(se.get(), mountpoint.c_str()) != 0) {
    log::error("startup_failed", {{"error", "cannot mount"}, {"mountpoint", mountpoint}});
    ::close(lock_fd);
    return 1;
  }
  if (!options.foreground && fuse_daemonize(0) != 0) {
    log::error("startup_failed", {{"error", "cannot daemonize"}});
    fuse_session_unmount(se.get());
    return 1;
  }
  log::info("serving", {{"mountpoint", mountpoint},
                        {"catalog", options.catalog_path},
                        {"backups", std::to_string(view.snapshot()->backups.size())},
                        {"idle_timeout", std::to_string(options.idle_timeout.count())},
                        {"max_mounts", std::to_string(options.max_mounts)}});
  int rc;
  {
    Housekeeper housekeeper(options, view, manager);
    fuse_loop_config* config = fuse_loop_cfg_create();
    // Generous: a request stuck on an unresponsive NFS/CIFS repository holds
    // its thread, and the other backups must still be served.
    fuse_loop_cfg_set_max_threads(config, 64);
    rc = fuse_session_loop_mt(se.get(), config);
    fuse_loop_cfg_destroy(config);
  }
  manager.detach_all("shutdown");
  fuse_remove_signal_handlers(se.get());
  fuse_session_unmount(se.get());
  log::info("stopped", {{"mountpoint", mountpoint}});
  ::close(lock_fd);
  // libfuse's signal handler leaves the signal number as the loop's result.
  const bool clean = rc == 0 || rc == SIGINT || rc == SIGTERM || rc == SIGHUP;
  return clean ? 0 : 1;
}

}  // namespace sendense
