#include "fuse/daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <csignal>
#include <cstdio>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "catalog/catalog.h"
#include "fuse/attach_manager.h"
#include "fuse/catalog_view.h"
#include "fuse/fuse_holder.h"
#include "fuse/fuse_ops.h"
#include "fuse/metrics.h"
#include "fuse/metrics_server.h"
#include "fuse/restore_tree.h"
#include "fuse/served_mount.h"
#include "fuse/session_io.h"
#include "fuse/tenant_views.h"
#include "fuse/systemd_notify.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/kernel/nbd_device.h"
#include "readers/kernel/staging.h"

namespace sendense {

namespace {

constexpr const char* kFsName = "sendense-restore";

// An exclusive flock held for the life of the daemon.
class LockFile {
 public:
  LockFile(const std::string& path, const std::string& busy_message) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) throw sys_error("cannot open lock file", path);
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw Error(EBUSY, busy_message, path);
    }
  }
  ~LockFile() { ::close(fd_); }
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

 private:
  int fd_ = -1;
};

// The mount point's lock lives in /run/lock (or /tmp), named after the path
// the way systemd-escape names units: "/mnt/sendense/restore" ->
// "sendense-restorefs-mnt-sendense-restore.lock".
std::string mountpoint_lock_path(const std::string& mountpoint) {
  std::string name;
  for (char c : mountpoint.substr(1)) {
    if (c == '/') name += '-';
    else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.') name += c;
    else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      name += buf;
    }
  }
  if (name.size() > 200) name = name.substr(name.size() - 200);
  const char* dir = ::access("/run/lock", W_OK) == 0 ? "/run/lock" : "/tmp";
  return std::string(dir) + "/sendense-restorefs-" + name + ".lock";
}

// Each attached backup holds a few descriptors per image of its chain;
// systemd's default soft limit (1024) is too small for deep chains.
void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// Background mode forks before anything is opened (an SQLite connection and
// threads do not survive fork). The parent waits until the child says the
// tree is mounted (or failed) and exits with that status. stderr stays where
// it was, so the logs still reach the terminal or journald.
class Daemonizer {
 public:
  explicit Daemonizer(bool foreground) {
    if (foreground) return;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw sys_error("cannot daemonize: pipe");
    pid_t pid = ::fork();
    if (pid < 0) throw sys_error("cannot daemonize: fork");
    if (pid > 0) {
      ::close(fds[1]);
      char status = '1';
      ssize_t n;
      do n = ::read(fds[0], &status, 1);
      while (n < 0 && errno == EINTR);
      ::_exit(n == 1 && status == '0' ? 0 : 1);
    }
    ::close(fds[0]);
    notify_fd_ = fds[1];
    ::setsid();
    if (::chdir("/") != 0) log::warn("chdir_failed", {{"path", "/"}});
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
      ::close(null);
    }
  }
  ~Daemonizer() { notify(false); }
  Daemonizer(const Daemonizer&) = delete;
  Daemonizer& operator=(const Daemonizer&) = delete;

  void notify(bool ok) {
    if (notify_fd_ < 0) return;
    const char status = ok ? '0' : '1';
    ssize_t ignored = ::write(notify_fd_, &status, 1);
    (void)ignored;
    ::close(notify_fd_);
    notify_fd_ = -1;
  }

 private:
  int notify_fd_ = -1;
};

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(const std::string& field) {
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && std::isdigit(static_cast<unsigned char>(field[i + 1]))) {
      out += static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// The topmost mount at `mountpoint`: its "major:minor" and whether it is ours.
struct TopMount {
  std::string device;
  bool ours = false;
};
std::optional<TopMount> top_mount_at(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<TopMount> top;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options ... - fstype source superopts
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (unescape_mountinfo(point) != mountpoint) continue;
    auto dash = line.find(" - ");
    top = TopMount{dev, dash != std::string::npos && line.find(kFsName, dash) != std::string::npos};
  }
  return top;
}

// Backups are read sequentially in large pieces (cp, rsync): let the kernel
// read ahead 1 MiB, the largest FUSE request, instead of its 128 KiB default.
// Measured: a cold 512 MiB cat went from 2.1 to 2.6 GB/s. The kernel resets
// it when it processes FUSE INIT, so the housekeeping thread sets it until it
// reads back. Returns true when done (or when it cannot be done).
bool raise_readahead(const std::string& mountpoint) {
  auto top = top_mount_at(mountpoint);
  if (!top || !top->ours) return false;
  const std::string knob = "/sys/class/bdi/" + top->device + "/read_ahead_kb";
  {
    std::ofstream out(knob);
    out << "1024\n";
    out.flush();
    if (!out) {
      log::warn("readahead_unchanged", {{"knob", knob}, {"reason", "cannot write (not root?)"}});
      return true;
    }
  }
  std::ifstream in(knob);
  int value = 0;
  in >> value;
  return value == 1024;
}

// A kept /dev/fuse descriptor whose connection still works (poll reports
// POLLERR once it was unmounted or aborted).
bool connection_alive(int fd) {
  pollfd p{fd, 0, 0};
  return ::poll(&p, 1, 0) == 0;
}

bool mounted_here(const std::string& path) {
  auto top = top_mount_at(path);
  return top && top->ours;
}

// A mount left by a crashed run. We hold the mount point's lock, so a mount
// of ours there is dead: detach it lazily, but only when it is the topmost
// mount (MNT_DETACH removes the topmost). A dead mount of something else
// (ENOTCONN) is not ours to remove.
void clear_dead_mount(const std::string& mountpoint) {
  struct stat st {};
  const bool dead = ::stat(mountpoint.c_str(), &st) != 0 && errno == ENOTCONN;
  auto top = top_mount_at(mountpoint);
  if (!top) return;
  if (!top->ours) {
    if (dead) throw Error(ENOTCONN, "a dead mount of another filesystem is in the way", mountpoint);
    return;  // something else mounted there; mounting on top of it is the admin's choice
  }
  // Ours and topmost: its daemon would hold the mount point's lock if it
  // were alive (stat() cannot tell: the kernel may answer from its cache).
  if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0)
    throw sys_error("cannot clear the stale mount left by a previous run", mountpoint);
  log::info("stale_mount_cleared", {{"mountpoint", mountpoint}});
}

class Housekeeper {
 public:
  Housekeeper(const DaemonOptions& options, std::string mountpoint, CatalogView& view, AttachManager& manager,
              Metrics& metrics, TenantViews& tenants)
      : options_(options),
        mountpoint_(std::move(mountpoint)),
        view_(view),
        manager_(manager),
        metrics_(metrics),
        tenants_(tenants),
        thread_([this] { run(); }) {}
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
    int readahead_tries = 20;  // 10 s
    bool tenants_due = true;   // at the first tick: the views a previous run left wait for us
    std::unique_lock lock(mutex_);
    while (!cv_.wait_for(lock, tick, [this] { return stop_; })) {
      lock.unlock();
      try {
        if (readahead_tries > 0) readahead_tries = raise_readahead(mountpoint_) ? 0 : readahead_tries - 1;
        manager_.detach_idle();
        manager_.detach_requested();
        if (clock::now() >= next_refresh) {
          const auto started = clock::now();
          const auto gone_backups = view_.refresh();
          metrics_.catalog_reloaded(std::chrono::duration<double>(clock::now() - started).count());
          for (const auto& gone : gone_backups) manager_.detach(gone, "removed");
          next_refresh = clock::now() + options_.refresh_interval;
          tenants_due = true;
        }
        if (tenants_due) {
          tenants_.reconcile();
          tenants_due = false;
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
  const std::string mountpoint_;
  CatalogView& view_;
  AttachManager& manager_;
  Metrics& metrics_;
  TenantViews& tenants_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Stop signals are blocked in every thread (all are started after
// block_stop_signals) and taken by the main thread alone, with sigwait. A
// handler runs on whichever thread takes a process's signal: any thread
// that leaves it unblocked may (one in clone(2) does), and libfuse's loop
// wakes only when its own thread is interrupted. CI saw that: a SIGTERM
// taken, most likely, by the spare workers' maker as it cloned a spare,
// and a daemon that went on serving.
// The tree's loop thread tells the main thread that it ended by itself
// (an unmount) with kTreeLoopEnded.
constexpr int kTreeLoopEnded = SIGUSR1;

sigset_t waited_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, kTreeLoopEnded}) sigaddset(&set, sig);
  return set;
}

void block_stop_signals() {
  const sigset_t set = waited_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // What libfuse's fuse_set_signal_handlers did for SIGPIPE: a write to a
  // closed socket or pipe fails with EPIPE instead of ending the daemon (a
  // handler, not SIG_IGN, so that children start with the default).
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGPIPE, &sa, nullptr);
}

// Returns the stop signal, or kTreeLoopEnded.
int wait_for_stop() {
  const sigset_t set = waited_signals();
  int sig = 0;
  while (::sigwait(&set, &sig) != 0) {
  }
  return sig;
}

std::string mount_options(const DaemonOptions& options) {
  // nosuid,nodev: setuid bits and device nodes in a backup are shown, never honoured.
  std::string opts = std::string("ro,nosuid,nodev,default_permissions,fsname=") + kFsName + ",subtype=" + kFsName;
  if (::geteuid() == 0) opts += ",allow_other";
  opts += ",max_read=" + std::to_string(kMaxRead);  // see fuse_ops.h
  for (const auto& o : options.fuse_options) opts += "," + o;
  return opts;
}

}  // namespace

// Absolute, so nothing depends on the working directory (the background
// daemon moves to /). Only the parent is resolved: the mount point itself
// may be a mount the holder keeps for this very process (any look at it
// would wait for an answer only we can give) or a dead one (ENOTCONN).
static std::string absolute_path(const std::string& path) {
  const auto abs = std::filesystem::absolute(path).lexically_normal();
  const auto name = abs.has_filename() ? abs.filename() : abs.parent_path().filename();
  const auto parent = abs.has_filename() ? abs.parent_path() : abs.parent_path().parent_path();
  std::error_code ec;
  auto canonical = std::filesystem::canonical(parent, ec);
  return ((ec ? parent : canonical) / name).string();
}

int run_daemon(const DaemonOptions& options) {
  std::string mountpoint;
  std::string catalog_path;
  std::unique_ptr<Daemonizer> daemonizer;
  std::unique_ptr<LockFile> catalog_lock, mountpoint_lock;
  std::unique_ptr<Catalog> catalog;
  std::optional<FuseHolder> holder;
  std::vector<FuseHolder::Held> held;
  std::optional<FuseHolder::Held> kept_tree;  // the tree's mount, left by a previous run
  std::map<std::string, FuseHolder::Held> kept_tenants;  // tenants' views it left, by path
  try {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::absolute(options.mountpoint).parent_path(), ec);
    mountpoint = absolute_path(options.mountpoint);
    // Resolved (symlinks, bind mounts reached by another path) so one
    // database always has one lock file.
    const auto catalog_abs = std::filesystem::absolute(options.catalog_path);
    std::filesystem::create_directories(catalog_abs.parent_path(), ec);
    catalog_path = (std::filesystem::canonical(catalog_abs.parent_path()) / catalog_abs.filename()).string();
    daemonizer = std::make_unique<Daemonizer>(options.foreground);
    raise_fd_limit();
    // One daemon per catalog (a second would fight over restore_mounts) and
    // one per mount point (a second would clear the first one's mount).
    catalog_lock = std::make_unique<LockFile>(catalog_path + ".lock", "another sendense-restorefs serves this catalog");
    mountpoint_lock = std::make_unique<LockFile>(mountpoint_lock_path(mountpoint),
                                                 "another sendense-restorefs serves " + mountpoint);
    // Before anything starts a thread: the holder may be forked here.
    holder.emplace(FuseHolder::connect_or_start(mountpoint));
    held = holder->take_over();
    catalog = std::make_unique<Catalog>(catalog_path);
    std::set<std::string> dead_runs;
    for (const auto& row : catalog->reconcile_all_mounts()) {
      log::info("reconciled", {{"backup", row.backup_id}, {"mount_id", row.id}, {"was", row.status}});
      dead_runs.insert(row.id);
    }
    // Until here a stop signal ends the daemon at once (its default): a
    // catalog on a hung NFS server cannot keep it from stopping. From here
    // on threads start (the child processes' spawner, below), and every one
    // must find the stop signals blocked.
    block_stop_signals();
    // The kernel backend's nbd devices of dead runs (their qemu-nbd died
    // with them), then staging mounts, loop devices and exports.
    for (const auto& dev : catalog->kernel_devices()) {
      if (!dead_runs.contains(dev.mount_id) && ::kill(static_cast<pid_t>(dev.owner_pid), 0) == 0) continue;
      if (dev.kind == "nbd") kernel::disconnect_stale_nbd(dev.device);
      catalog->release_kernel_device(dev.device);
    }
    for (const auto& id : dead_runs) kernel::release_stale_staging(id);
    for (auto& h : held) {
      const char* unusable = h.init.empty() ? "kept without its INIT"  // the previous run died setting it up
                             : !connection_alive(h.fd.get()) ? "its connection is gone"
                             : !mounted_here(h.path) ? "no longer mounted"
                                                     : nullptr;
      if (!unusable && h.path == mountpoint) {
        kept_tree.emplace(std::move(h));
        continue;
      }
      if (!unusable && h.path.starts_with(TenantViews::path_of(mountpoint, ""))) {
        const std::string path = h.path;
        kept_tenants.emplace(path, std::move(h));
        continue;
      }
      holder->drop(h.path);
      if (unusable && mounted_here(h.path)) ::umount2(h.path.c_str(), MNT_DETACH);
      log::info("kept_mount_dropped", {{"mountpoint", h.path}, {"reason", unusable ? unusable : "not served by this run"}});
    }
    held.clear();
    if (!kept_tree) {
      // The views stacked on a tree that is not resumed went with it.
      for (auto& [path, h] : kept_tenants) holder->drop(path);
      kept_tenants.clear();
      clear_dead_mount(mountpoint);
      std::filesystem::create_directories(mountpoint, ec);
    }
  } catch (const std::exception& e) {
    log::error("startup_failed", {{"error", e.what()}});
    return 1;
  }

  Metrics metrics;
  CatalogView view(*catalog);
  view.refresh();
  AttachOptions attach_options;
  attach_options.idle_timeout = options.idle_timeout;
  attach_options.max_mounts = options.max_mounts;
  attach_options.mount_path = mountpoint;
  attach_options.fs_open = options.fs_open;
  attach_options.attach_mode = options.attach_mode;
  attach_options.isolation = options.isolation;
  attach_options.worker.timeout = options.worker_timeout;
  attach_options.worker.memory_limit = options.worker_memory_mib << 20;
  if (!options.nbd_devices.empty()) attach_options.nbd_devices = kernel::parse_nbd_range(options.nbd_devices);
  attach_options.metrics = &metrics;
  AttachManager manager(*catalog, view, attach_options);
  metrics.set_attached_gauge([&manager] { return manager.attached_count(); });
  RestoreTree tree(view, manager, TreeTimeouts{});
  FuseContext context(tree);  // after the session ends it frees the handles the kernel never released
  context.metrics = &metrics;
  std::unique_ptr<MetricsServer> metrics_server;
  if (!options.metrics_listen.empty()) {
    try {
      metrics_server = std::make_unique<MetricsServer>(metrics, options.metrics_listen);
    } catch (const std::exception& e) {
      log::error("startup_failed", {{"error", e.what()}});
      return 1;
    }
  }

  const std::string opts = mount_options(options);
  std::optional<Watchdog> watchdog;  // destroyed after the session: see systemd_notify.h
  std::unique_ptr<ServedMount> tree_mount;
  try {
    tree_mount = std::make_unique<ServedMount>(mountpoint, context, opts, *holder, std::move(kept_tree));
  } catch (const std::exception& e) {
    log::error("startup_failed", {{"error", e.what()}, {"mountpoint", mountpoint}, {"options", opts}});
    return 1;
  }
  daemonizer->notify(true);
  notify_ready("serving " + mountpoint);
  watchdog.emplace(mountpoint);
  log::info("serving", {{"mountpoint", mountpoint},
                        {"catalog", catalog_path},
                        {"backups", std::to_string(view.snapshot()->backups.size())},
                        {"idle_timeout", std::to_string(options.idle_timeout.count())},
                        {"max_mounts", std::to_string(options.max_mounts)},
                        {"journal_replay", options.fs_open.replay_journal ? "on" : "off"}});
  int stop_signal;
  {
    TenantViews tenants(mountpoint, opts, view, manager, &metrics, *holder, std::move(kept_tenants));
    Housekeeper housekeeper(options, mountpoint, view, manager, metrics, tenants);
    // Generous: a request stuck on an unresponsive NFS/CIFS repository holds
    // its thread, and the other backups must still be served.
    tree_mount->start(64, [main = pthread_self()] { pthread_kill(main, kTreeLoopEnded); });
    stop_signal = wait_for_stop();
    tree_mount->stop();
  }
  watchdog->stop();
  notify_stopping();
  manager.detach_all("shutdown");
  const bool signalled = stop_signal != kTreeLoopEnded;
  const int rc = tree_mount->loop_result();
  if (signalled) {
    // The mount stays, kept by the holder: clients wait for the next run,
    // which takes it over. `sendense-restorefs --unmount` takes it down.
    log::info("stopped", {{"mountpoint", mountpoint}, {"mount", "kept"}, {"holder", std::to_string(holder->pid())}});
  } else {
    // The loop ended because the mount went away (umount): nothing to keep.
    try {
      holder->drop(mountpoint);
    } catch (const std::exception&) {
    }
    log::info("stopped", {{"mountpoint", mountpoint}, {"mount", "gone"}});
  }
  return signalled || rc == 0 ? 0 : 1;
}

int unmount_tree(const std::string& mountpoint_arg) {
  const std::string mountpoint = absolute_path(mountpoint_arg);
  try {
    if (FuseHolder::unmount(mountpoint)) {
      log::info("unmounted", {{"mountpoint", mountpoint}, {"by", "holder"}});
      return 0;
    }
    // No holder (a run from before it existed, or it was killed): a mount of ours left there.
    auto top = top_mount_at(mountpoint);
    if (!top || !top->ours) {
      log::info("unmounted", {{"mountpoint", mountpoint}, {"by", "nothing to do"}});
      return 0;
    }
    if (::umount2(mountpoint.c_str(), 0) != 0 && ::umount2(mountpoint.c_str(), MNT_DETACH) != 0)
      throw sys_error("cannot unmount", mountpoint);
    log::info("unmounted", {{"mountpoint", mountpoint}, {"by", "umount"}});
    return 0;
  } catch (const std::exception& e) {
    log::error("unmount_failed", {{"error", e.what()}});
    return 1;
  }
}

}  // namespace sendense
