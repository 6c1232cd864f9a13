// Handles given to the kernel (open files, open folders) as FUSE `fh`
// values. The kernel sends no RELEASE for what is still open when the
// session ends (a shell cd'ed inside at unmount, SIGTERM during a copy), so
// the table owns every handle and frees the rest when it is destroyed, which
// also drops the backups they keep attached.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace sendense {

template <class T>
class HandleTable {
 public:
  HandleTable() = default;
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;

  // Takes ownership; the value is the `fh` to give the kernel.
  uint64_t add(std::unique_ptr<T> handle) {
    T* raw = handle.get();
    std::lock_guard lock(mutex_);
    live_.emplace(raw, std::move(handle));
    return reinterpret_cast<uint64_t>(raw);
  }

  // The handle behind a live `fh` (the kernel passes back only what add gave it).
  static T& get(uint64_t fh) { return *reinterpret_cast<T*>(fh); }

  // Gives ownership back (on RELEASE); nullptr if `fh` is not live.
  std::unique_ptr<T> take(uint64_t fh) {
    std::lock_guard lock(mutex_);
    auto it = live_.find(reinterpret_cast<T*>(fh));
    if (it == live_.end()) return nullptr;
    std::unique_ptr<T> owned = std::move(it->second);
    live_.erase(it);
    return owned;
  }

  size_t size() {
    std::lock_guard lock(mutex_);
    return live_.size();
  }

 private:
  std::mutex mutex_;
  std::unordered_map<T*, std::unique_ptr<T>> live_;
};

}  // namespace sendense
