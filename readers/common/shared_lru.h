// A bounded, thread-safe LRU of immutable values shared by key (the
// filesystem readers' run-map and directory caches). Values are handed out
// as shared_ptr<const V>: evicting an entry never invalidates a value
// someone still holds, it only stops the cache from keeping it. Bounded by
// entry count and by total weight (the caller says what a value weighs:
// runs, names); a value heavier than the whole weight budget is returned to
// its caller but not kept.
//
// Pin::last: the cache also holds the value it last handed out (found or
// inserted), outside its weight and the budget, so that value survives
// evictions, and one too heavy to keep is kept there. That is for
// structures used across many stateless requests, a huge folder listed a
// page at a time or looked up a name at a time: between two pages, the
// small entries of other caches (metadata blocks read for the page's
// attributes) are used more recently and would push the folder out, and
// building it again costs its whole size each time. The caller's own cap on
// the structure bounds what the pin adds.
//
// With a CacheBudget (one per backup), weights are bytes and are charged to
// it as well: the cache is one of the budget's members, and an insert that
// takes the backup's caches past the budget evicts the least recently used
// entries of all of them (this cache's or another's).
//
// Threading: every method locks the cache's own mutex and calls nothing
// outside it while locked. insert() and erase() free the values they drop
// after unlocking, on the caller's thread: a caller must not hold a lock a
// value's destructor takes (none of the readers' values take any). Budget
// evictions free values under the budget's lock (cache_budget.h).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "readers/common/cache_budget.h"

namespace sendense::ext {

template <typename V>
class SharedLru final : private CacheBudget::Member {
 public:
  using Ptr = std::shared_ptr<const V>;

  struct Stats {
    size_t entries = 0;
    size_t weight = 0;
    uint64_t hits = 0;    // find() calls that found the key
    uint64_t misses = 0;  // insert() calls: values that had to be built
  };

  enum class Pin { none, last };

  SharedLru(size_t max_entries, size_t max_weight, CacheBudgetPtr budget = nullptr, Pin pin = Pin::none)
      : max_entries_(max_entries),
        max_weight_(budget ? std::min<size_t>(max_weight, budget->limit()) : max_weight),
        pin_last_(pin == Pin::last),
        budget_(std::move(budget)) {
    if (budget_) budget_->join(this);
  }
  ~SharedLru() override {
    if (!budget_) return;
    budget_->leave(this);
    budget_->uncharge(weight_);
  }
  SharedLru(const SharedLru&) = delete;
  SharedLru& operator=(const SharedLru&) = delete;

  // The value for `key` (now the most recently used), or nullptr.
  Ptr find(uint64_t key) {
    Ptr unpinned;  // freed after the lock
    std::lock_guard lock(mutex_);
    auto it = index_.find(key);
    if (it == index_.end()) {
      if (!pinned_ || pinned_key_ != key) return nullptr;
      ++hits_;
      return pinned_;
    }
    ++hits_;
    it->second->used = stamp();
    lru_.splice(lru_.begin(), lru_, it->second);
    pin(key, it->second->value, unpinned);
    return it->second->value;
  }

  // Keeps `value` for `key` and returns it; if another thread inserted the
  // key first, returns (and keeps) that one instead.
  Ptr insert(uint64_t key, Ptr value, size_t weight) {
    {
      std::list<Entry> evicted;  // freed after the lock: a value's destructor may do anything
      Ptr unpinned;              // likewise
      std::lock_guard lock(mutex_);
      ++misses_;
      if (auto it = index_.find(key); it != index_.end()) return it->second->value;
      if (pinned_ && pinned_key_ == key) return pinned_;
      pin(key, value, unpinned);
      if (weight > max_weight_ || max_entries_ == 0) return value;  // too big to keep with the others
      lru_.push_front(Entry{key, value, weight, stamp()});
      index_.emplace(key, lru_.begin());
      add_weight(weight);
      while (lru_.size() > max_entries_ || weight_ > max_weight_) drop_oldest(evicted);
    }
    if (budget_) budget_->trim();  // not under mutex_: trimming may come back here (evict_oldest)
    return value;
  }

  // Stops keeping `key`; whoever holds its value keeps it.
  void erase(uint64_t key) {
    std::list<Entry> erased;  // freed after the lock, as in insert()
    std::lock_guard lock(mutex_);
    if (pinned_ && pinned_key_ == key) erased.push_back(Entry{key, std::move(pinned_), 0, 0});
    auto it = index_.find(key);
    if (it == index_.end()) return;
    sub_weight(it->second->weight);
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
    uint64_t used;  // stamp of its last use
  };

  // Called with mutex_ held.
  uint64_t stamp() { return budget_ ? budget_->tick() : ++clock_; }
  void pin(uint64_t key, const Ptr& value, Ptr& unpinned) {
    if (!pin_last_) return;
    unpinned = std::move(pinned_);
    pinned_key_ = key;
    pinned_ = value;
  }
  void add_weight(size_t w) {
    weight_ += w;
    if (budget_) budget_->charge(w);
  }
  void sub_weight(size_t w) {
    weight_ -= w;
    if (budget_) budget_->uncharge(w);
  }
  void drop_oldest(std::list<Entry>& into) {
    sub_weight(lru_.back().weight);
    index_.erase(lru_.back().key);
    into.splice(into.end(), lru_, std::prev(lru_.end()));
  }

  // CacheBudget::Member (called by the budget's trim, never under mutex_).
  uint64_t oldest_use() const override {
    std::lock_guard lock(mutex_);
    return lru_.empty() ? UINT64_MAX : lru_.back().used;
  }
  bool evict_oldest() override {
    std::list<Entry> evicted;
    std::lock_guard lock(mutex_);
    if (lru_.empty()) return false;
    drop_oldest(evicted);
    return true;
  }

  const size_t max_entries_;
  const size_t max_weight_;
  const bool pin_last_;
  const CacheBudgetPtr budget_;
  mutable std::mutex mutex_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<uint64_t, typename std::list<Entry>::iterator> index_;
  size_t weight_ = 0;
  uint64_t pinned_key_ = 0;  // Pin::last: the value last handed out
  Ptr pinned_;
  uint64_t clock_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace sendense::ext
