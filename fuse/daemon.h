// The daemon: takes the single-instance lock, reconciles what a crashed run
// left, mounts the tree, serves it with a multi-threaded loop, runs the
// housekeeping thread (catalog refresh, idle detach, access-time flush) and
// releases everything on SIGINT/SIGTERM.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "readers/fs/filesystem.h"

namespace sendense {

struct DaemonOptions {
  std::string mountpoint;
  std::string catalog_path;
  std::chrono::seconds idle_timeout{3600};
  size_t max_mounts = 8;
  bool foreground = false;
  std::vector<std::string> fuse_options;        // extra -o options
  std::chrono::milliseconds refresh_interval{2000};
  std::chrono::seconds flush_interval{5};
  FsOpenOptions fs_open;                        // how every volume's filesystem is opened (--no-replay, --ntfs-*)
  std::string attach_mode = "auto";             // --attach userspace|kernel|auto
  std::string nbd_devices;                      // --nbd-devices FIRST-LAST ("" = qemu-storage-daemon + loop)
  std::string metrics_listen;                   // --metrics-listen ADDRESS:PORT ("" = no endpoint)
  std::string isolation = "worker";             // --isolation worker|none
  std::chrono::seconds worker_timeout{30};      // --worker-timeout SECONDS
  uint64_t worker_memory_mib = 1024;            // --worker-memory MIB
};

// Returns the process exit code. Errors before mounting are logged.
// SIGTERM/SIGINT end the run but leave the mounts to the holder
// (fuse/fuse_holder.h): the next run takes them over.
int run_daemon(const DaemonOptions& options);

// `sendense-restorefs --unmount`: the holder unmounts the tree and every
// tenant view and ends (a running daemon then stops too). Returns the exit code.
int unmount_tree(const std::string& mountpoint);

}  // namespace sendense
