// A bounded, thread-safe LRU of immutable values shared by key (the
// filesystem readers' run-map and directory caches). Values are handed out
// as shared_ptr<const V>: evicting an entry never invalidates a value
// someone still holds, it only stops the cache from keeping it. Bounded by
// entry count and by total weight (the caller says what a value weighs:
// runs, names); a value heavier than the whole weight budget is returned to
// its caller but not kept.
//
// Threading: every method locks the cache's own mutex and calls nothing
// outside it while locked. insert() and erase() free the values they drop
// after unlocking, on the caller's thread: a caller must not hold a lock a
// value's destructor takes (none of the readers' values take any).
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace sendense::ext {

template <typename V>
class SharedLru {
 public:
  using Ptr = std::shared_ptr<const V>;

  struct Stats {
    size_t entries = 0;
    size_t weight = 0;
    uint64_t hits = 0;    // find() calls that found the key
    uint64_t misses = 0;  // insert() calls: values that had to be built
  };

  SharedLru(size_t max_entries, size_t max_weight) : max_entries_(max_entries), max_weight_(max_weight) {}
  SharedLru(const SharedLru&) = delete;
  SharedLru& operator=(const SharedLru&) = delete;

  // The value for `key` (now the most recently used), or nullptr.
  Ptr find(uint64_t key) {
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    ++hits_;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->value;
  }

  // Keeps `value` for `key` and returns it; if another thread inserted the
  // key first, returns (and keeps) that one instead.
  Ptr insert(uint64_t key, Ptr value, size_t weight) {
    std::list<Entry> evicted;  // freed after the lock: a value's destructor may do anything
    std::lock_guard lock(mutex_);
    ++misses_;
    if (auto it = index_.find(key); it != index_.end()) return it->second->value;
    if (weight > max_weight_ || max_entries_ == 0) return value;  // too big to keep
    lru_.push_front(Entry{key, value, weight});
    index_.emplace(key, lru_.begin());
    weight_ += weight;
    while (lru_.size() > max_entries_ || weight_ > max_weight_) {
      weight_ -= lru_.back().weight;
      index_.erase(lru_.back().key);
      evicted.splice(evicted.end(), lru_, std::prev(lru_.end()));
    }
    return value;
  }

  // Stops keeping `key`; whoever holds its value keeps it.
  void erase(uint64_t key) {
    std::list<Entry> erased;  // freed after the lock, as in insert()
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) return;
    weight_ -= it->second->weight;
    erased.splice(erased.end(), lru_, it->second);
    index_.erase(it);
  }

  Stats stats() const {
    std::lock_guard lock(mutex_);
    return Stats{lru_.size(), weight_, hits_, misses_};
  }

 private:
  struct Entry {
    uint64_t key;
    Ptr value;
    size_t weight;
  };

  const size_t max_entries_;
  const size_t max_weight_;
  mutable std::mutex mutex_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<uint64_t, typename std::list<Entry>::iterator> index_;
  size_t weight_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace sendense::ext
