#include "fuse/served_mount.h"

#include <signal.h>
#include <sys/mount.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace {

// Wakes a session's loop thread out of its wait (libfuse checks whether the
// session ended when sem_wait() is interrupted).
constexpr int kWakeSignal = SIGUSR2;

// Whether mount options say "ro" (the last of ro/rw wins, as in mount(8)).
bool read_only(const std::string& options) {
  bool ro = false;
  size_t start = 0;
  while (start <= options.size()) {
    const size_t end = std::min(options.find(',', start), options.size());
    const std::string_view o(options.data() + start, end - start);
    if (o == "ro") ro = true;
    else if (o == "rw") ro = false;
    start = end + 1;
  }
  return ro;
}

void install_wake_handler() {
  static const bool installed = [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the wait must return
    ::sigaction(kWakeSignal, &sa, nullptr);
    return true;
  }();
  (void)installed;
}

}  // namespace

ServedMount::ServedMount(std::string path, FuseContext& context, const std::string& options, FuseHolder& holder,
                         std::optional<FuseHolder::Held> kept)
    : path_(std::move(path)), context_(context), holder_(holder) {
  std::vector<const char*> argv = {"sendense-restorefs", "-o", options.c_str()};
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
  fuse_lowlevel_ops ops = make_fuse_operations();
  se_ = fuse_session_new(&args, &ops, sizeof ops, &context);
  fuse_opt_free_args(&args);
  if (!se_) throw Error(EINVAL, "fuse_session_new failed (bad -o option?): " + options, path_);
  // The kernel's INIT goes to the holder with the descriptor: what a later
  // run needs to take this mount over.
  const std::string where = path_;
  io_ = std::make_unique<SessionIo>(kept ? kept->init : std::string(), [&holder, where](std::string_view init) {
    try {
      holder.keep_init(where, init);
    } catch (const std::exception& e) {
      log::warn("holder_failed", {{"error", e.what()}, {"mountpoint", where}, {"effect", "a restart will mount anew"}});
    }
  });
  context.io = io_.get();
  context.read_only_mount = read_only(options);
  try {
    if (kept) {
      io_->install(se_, kept->fd.release());
      taken_over_ = true;
      log::info("mount_taken_over", {{"mountpoint", path_}, {"holder", std::to_string(holder.pid())}});
    } else {
      if (fuse_session_mount(se_, path_.c_str()) != 0) throw Error(EIO, "cannot mount", path_);
      holder.keep(path_, fuse_session_fd(se_));
      io_->install(se_, fuse_session_fd(se_));
    }
  } catch (...) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    throw;
  }
  context.session = se_;
  context.prefetch.start(se_, context.metrics);
}

ServedMount::~ServedMount() {
  stop();
  if (se_) fuse_session_destroy(se_);
}

void ServedMount::start(int max_threads, std::function<void()> ended) {
  install_wake_handler();
  thread_ = std::thread([this, max_threads, ended = std::move(ended)] {
    // (Stop signals are blocked here as in every thread: the daemon's main
    // thread waits for them, daemon.cpp.)
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, static_cast<unsigned>(max_threads));
    loop_result_ = fuse_session_loop_mt(se_, config);
    fuse_loop_cfg_destroy(config);
    loop_done_ = true;
    if (ended) ended();
  });
}

void ServedMount::stop() {
  context_.prefetch.stop();
  if (!thread_.joinable()) return;
  fuse_session_exit(se_);
  // Again until it ends: a wake that lands just before the loop waits is lost.
  while (!loop_done_) {
    pthread_kill(thread_.native_handle(), kWakeSignal);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  thread_.join();
}

void ServedMount::unmount() {
  stop();
  try {
    holder_.drop(path_);
  } catch (const std::exception& e) {
    log::warn("holder_failed", {{"error", e.what()}, {"mountpoint", path_}});
  }
  // Lazily: an NFS server may hold descriptors into it; the connection
  // closes with our descriptor below, so they get errors, not the backups.
  // ENOENT: its folder already left the tree, and the kernel detached the
  // mount stacked on it when it saw the folder go.
  if (::umount2(path_.c_str(), MNT_DETACH) != 0 && errno != ENOENT && errno != EINVAL)
    log::warn("unmount_failed", {{"mountpoint", path_}, {"error", std::strerror(errno)}});
}

}  // namespace sendense
