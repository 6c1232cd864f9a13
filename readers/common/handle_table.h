// Handles given out as numbers: a reader's open files (Filesystem::open),
// and those given to the kernel (open files, open folders) as FUSE `fh`
// values. An `fh` is a number, never a pointer: the kernel keeps the handles
// of a mount across a daemon restart (the FUSE connection outlives the
// process, see fuse/fuse_holder.h) and sends them back to a process that
// never issued them. Those are unknown here, and the caller adopts them:
// a handle holds only what can be rebuilt from its node id.
//
// The kernel sends no RELEASE for what is still open when the session ends,
// so the table owns every handle and frees the rest when it is destroyed.
#pragma once

#include <sys/random.h>

#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace sendense {

template <class T>
class HandleTable {
 public:
  // Numbers start at a random 32-bit prefix per process, so a handle issued
  // by this run never equals one a previous run left with the kernel.
  HandleTable() {
    uint32_t prefix = 0;
    if (::getrandom(&prefix, sizeof prefix, 0) != sizeof prefix) prefix = static_cast<uint32_t>(::time(nullptr));
    next_ = (static_cast<uint64_t>(prefix | 1u) << 32) + 1;
  }
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;

  // The value is the `fh` to give the kernel.
  uint64_t add(std::shared_ptr<T> handle) {
    std::lock_guard lock(mutex_);
    uint64_t fh = next_++;
    live_.emplace(fh, std::move(handle));
    return fh;
  }

  // nullptr if `fh` is not one this process knows (yet).
  std::shared_ptr<T> find(uint64_t fh) const {
    std::lock_guard lock(mutex_);
    auto it = live_.find(fh);
    return it == live_.end() ? nullptr : it->second;
  }

  // Takes `fh` over with `handle` unless another request adopted it first;
  // returns the handle that is now live under `fh`.
  std::shared_ptr<T> adopt(uint64_t fh, std::shared_ptr<T> handle) {
    std::lock_guard lock(mutex_);
    return live_.emplace(fh, std::move(handle)).first->second;
  }

  // Removes `fh` (on RELEASE); nullptr if it is not live.
  std::shared_ptr<T> take(uint64_t fh) {
    std::lock_guard lock(mutex_);
    auto it = live_.find(fh);
    if (it == live_.end()) return nullptr;
    std::shared_ptr<T> owned = std::move(it->second);
    live_.erase(it);
    return owned;
  }

  size_t size() const {
    std::lock_guard lock(mutex_);
    return live_.size();
  }

 private:
  mutable std::mutex mutex_;
  uint64_t next_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<T>> live_;
};

}  // namespace sendense
