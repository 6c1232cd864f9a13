#include "fuse/systemd_notify.h"

#include <sys/statfs.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstring>

#include "readers/common/log.h"

namespace sendense {

void notify_ready(const std::string& status) {
  const std::string message = "READY=1\nSTATUS=" + status;
  if (sd_notify(0, message.c_str()) < 0) log::warn("notify_failed", {{"what", "READY=1"}});
}

void notify_stopping() { sd_notify(0, "STOPPING=1"); }

Watchdog::Watchdog(std::string mountpoint) : mountpoint_(std::move(mountpoint)) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  log::info("watchdog", {{"period_ms", std::to_string(usec / 1000)}});
  thread_ = std::thread([this, usec] { run(std::chrono::microseconds(usec / 2)); });
}

Watchdog::~Watchdog() {
  stop();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
}

void Watchdog::run(std::chrono::microseconds period) {
  std::unique_lock lock(mutex_);
  do {
    lock.unlock();
    struct statfs st {};
    const bool answered = ::statfs(mountpoint_.c_str(), &st) == 0;
    const int err = errno;
    lock.lock();
    if (stop_) break;
    if (answered) sd_notify(0, "WATCHDOG=1");
    else log::warn("watchdog_check_failed", {{"mountpoint", mountpoint_}, {"error", std::strerror(err)}});
  } while (!cv_.wait_for(lock, period, [this] { return stop_; }));
}

}  // namespace sendense
