// systemd service notifications (Type=notify): READY=1 once the tree is
// mounted, STOPPING=1 on the way out, and WATCHDOG=1 while the FUSE loop
// answers. Nothing happens when the daemon does not run under systemd
// (no NOTIFY_SOCKET), so the same binary runs by hand and in tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace sendense {

void notify_ready(const std::string& status);
void notify_stopping();

// When the service has a watchdog (WatchdogSec= sets WATCHDOG_USEC), pings it
// every half period, but only after a statfs(2) of the mount point came back:
// the kernel sends every statfs to the daemon (it caches none), so the ping
// proves that a FUSE worker thread took a request and answered it. A hung
// loop stops the pings and systemd restarts the service.
//
// A statfs stuck on a hung loop blocks this thread; it returns (ENOTCONN)
// when the session's /dev/fuse descriptor is closed, so destroy the
// watchdog after the FUSE session.
class Watchdog {
 public:
  explicit Watchdog(std::string mountpoint);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // No more pings from now on (the loop is ending); does not wait.
  void stop();

 private:
  void run(std::chrono::microseconds period);

  const std::string mountpoint_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sendense
