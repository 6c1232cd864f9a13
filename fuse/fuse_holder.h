// The holder keeps the daemon's FUSE connections alive between runs.
//
// A FUSE mount lives as long as some process holds its /dev/fuse descriptor.
// NFS servers (ganesha keeps thousands of descriptors into the mount) and
// SMB sessions must not notice a daemon restart, so the mount must not go
// when the daemon does: a new mount is a new device number, and everything
// they hold becomes ESTALE. The first run therefore starts a small holder
// process, which keeps a copy of each mount's descriptor (the tree and every
// tenant's view) with the kernel's INIT request, and hands them to the next
// run (SIGTERM, kill -9, a crash), which takes the mounts over
// (fuse/session_io.h). While no daemon runs, requests wait in the kernel.
//
// Why a holder and not systemd's file-descriptor store: it works the same
// with or without systemd (tests, containers, a manual start), and the
// store of Debian 12's systemd (252) is dropped on `systemctl stop`/`restart`
// of the unit. The unit uses KillMode=process so a restart leaves it alone.
//
// The holder ends when every mount it keeps is gone (unmounted, or its
// connection aborted) and no daemon is connected, or when told to
// (`sendense-restorefs --unmount`): then it unmounts them itself. It is
// found through an abstract unix socket named after the mount point and
// talks only to processes of its own user.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "readers/common/unique_fd.h"

namespace sendense {

class FuseHolder {
 public:
  // A mount a previous run left: its path, a descriptor of its connection
  // and the INIT request the kernel sent (empty if the run died before it).
  struct Held {
    std::string path;
    UniqueFd fd;
    std::string init;
  };

  // Connects to the holder of `mountpoint`, starting one when none runs.
  // Call while the process has no other thread (it may fork).
  static FuseHolder connect_or_start(const std::string& mountpoint);

  FuseHolder(FuseHolder&&) = default;

  pid_t pid() const { return pid_; }  // known after take_over()

  // What the previous run left, in the order it was kept (the tree first).
  std::vector<Held> take_over();

  // Keeps a copy of `fd` (a mounted connection at `path`) for the next run.
  void keep(const std::string& path, int fd);
  // The kernel's INIT request on `path`'s connection.
  void keep_init(const std::string& path, std::string_view init);
  // Forgets `path` (unmounted on purpose, e.g. a tenant removed).
  void drop(const std::string& path);
  // Unmounts everything it keeps (the tree, and the views on it) and ends.
  void quit();

  // The holder process itself (`sendense-restorefs --fuse-holder`), on the
  // listening socket its starter passed as `listen_fd`.
  [[noreturn]] static void serve(int listen_fd);

  // `sendense-restorefs --unmount MOUNTPOINT`: tells the holder to unmount
  // and end, and waits for it. False if no holder runs for it.
  static bool unmount(const std::string& mountpoint);

 private:
  FuseHolder(UniqueFd socket, pid_t pid) : socket_(std::move(socket)), pid_(pid) {}
  void send(char op, const std::string& path, std::string_view payload, int fd = -1);

  std::unique_ptr<std::mutex> mutex_ = std::make_unique<std::mutex>();
  UniqueFd socket_;
  pid_t pid_ = 0;
};

}  // namespace sendense
