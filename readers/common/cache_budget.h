// One backup's memory for caches (issue 11: "a budget for caches and maps
// per backup"). Every cache its readers keep (qcow2 clusters, metadata
// block chunks, run maps, directory indexes, listings) charges the bytes of
// what it keeps here; when the total passes the limit, the least recently
// used entry of any of them goes, whichever cache holds it. A hostile image
// can thus make one backup's caches churn, but not grow past the budget, and
// one busy structure can use what the others do not need.
//
// What a cache keeps still obeys its own cap too (SharedLru's entries and
// weight); the budget bounds their sum. Values someone still holds are not
// freed by an eviction (SharedLru hands out shared_ptr), so what a request
// in flight uses comes on top, bounded by the per-structure caps.
//
// Threading: charge() is a lock-free add. trim() takes the budget's own
// mutex, then one member's at a time (through Member); a member must never
// call trim() while holding its own lock. join()/leave() take the budget's
// mutex, so a member leaving (its destructor) waits for a trim in progress.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace sendense {

inline constexpr uint64_t kDefaultCacheBudgetBytes = 64u << 20;  // --cache-budget 64

class CacheBudget {
 public:
  // A cache that gives entries back when asked.
  class Member {
   public:
    virtual ~Member() = default;
    // The use stamp (tick()) of its least recently used entry; UINT64_MAX when empty.
    virtual uint64_t oldest_use() const = 0;
    // Drops its least recently used entry (uncharging it); false if it had none.
    virtual bool evict_oldest() = 0;
  };

  explicit CacheBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}
  CacheBudget(const CacheBudget&) = delete;
  CacheBudget& operator=(const CacheBudget&) = delete;

  uint64_t limit() const { return limit_; }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

  // The use clock shared by every member: stamps compare across caches.
  uint64_t tick() { return clock_.fetch_add(1, std::memory_order_relaxed) + 1; }

  void charge(uint64_t bytes) { used_.fetch_add(bytes, std::memory_order_relaxed); }
  void uncharge(uint64_t bytes) { used_.fetch_sub(bytes, std::memory_order_relaxed); }

  void join(Member* m);
  void leave(Member* m);

  // Evicts the least recently used entries of all members until the total
  // is within the limit (or nothing is left to evict).
  void trim();

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> used_{0};
  std::atomic<uint64_t> clock_{0};
  std::atomic<uint64_t> evictions_{0};
  std::mutex mutex_;  // members_ and one trim at a time
  std::vector<Member*> members_;
};

using CacheBudgetPtr = std::shared_ptr<CacheBudget>;

}  // namespace sendense
