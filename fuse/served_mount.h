// One FUSE mount this run serves (the tree, or one tenant's view): a fresh
// mount handed to the holder, or one a previous run left with the holder,
// taken over (fuse/fuse_holder.h, fuse/session_io.h). Destroying it ends
// this run's session only: the mount stays with the holder for the next
// run, unless unmount() took it down.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "fuse/fuse_holder.h"
#include "fuse/fuse_ops.h"
#include "fuse/session_io.h"

namespace sendense {

class ServedMount {
 public:
  // `options`: the -o string of the mount. `kept`: what the holder kept at
  // `path` from a previous run (taken over), or nullopt (mounted anew).
  // Throws Error when it can be neither.
  ServedMount(std::string path, FuseContext& context, const std::string& options, FuseHolder& holder,
              std::optional<FuseHolder::Held> kept);
  ~ServedMount();
  ServedMount(const ServedMount&) = delete;
  ServedMount& operator=(const ServedMount&) = delete;

  fuse_session* session() const { return se_; }
  const std::string& path() const { return path_; }
  bool taken_over() const { return taken_over_; }

  // Serves on a thread of its own with up to `max_threads` workers; stop()
  // ends it. `ended` runs on that thread once its loop ended, by stop() or
  // by itself (the mount went away, or the connection failed).
  void start(int max_threads, std::function<void()> ended = {});
  // Ends reading ahead (prefetch.h) and the thread start() began, if any.
  void stop();
  // What the loop returned once it ended: 0 when the mount went away.
  int loop_result() const { return loop_result_; }

  // Takes the mount down for good (a tenant removed): the holder forgets it.
  void unmount();

 private:
  std::string path_;
  FuseContext& context_;
  FuseHolder& holder_;
  std::unique_ptr<SessionIo> io_;
  fuse_session* se_ = nullptr;
  bool taken_over_ = false;
  std::atomic<bool> loop_done_{false};
  std::atomic<int> loop_result_{0};
  std::thread thread_;
};

}  // namespace sendense
