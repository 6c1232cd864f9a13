#include "readers/common/cache_budget.h"

#include <algorithm>
#include <limits>

namespace sendense {

void CacheBudget::join(Member* m) {
  std::lock_guard lock(mutex_);
  members_.push_back(m);
}

void CacheBudget::leave(Member* m) {
  std::lock_guard lock(mutex_);
  members_.erase(std::remove(members_.begin(), members_.end(), m), members_.end());
}

void CacheBudget::trim() {
  if (used() <= limit_) return;
  std::lock_guard lock(mutex_);
  // A scan of the members per eviction: a backup has a few caches per
  // volume, and an insert usually evicts one or two entries.
  while (used() > limit_) {
    Member* victim = nullptr;
    uint64_t oldest = std::numeric_limits<uint64_t>::max();
    for (Member* m : members_) {
      const uint64_t t = m->oldest_use();
      if (t < oldest) {
        oldest = t;
        victim = m;
      }
    }
    if (victim == nullptr || !victim->evict_oldest()) return;
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace sendense
