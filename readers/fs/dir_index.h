// The name -> inode index a reader's lookup() answers from, one per folder,
// and the cache of them (one per volume, charged to the backup's cache
// budget). The ext, XFS and NTFS readers each build an index from their own
// listing; the cache and its bounds live here once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "readers/common/cache_budget.h"
#include "readers/common/shared_lru.h"
#include "readers/fs/filesystem.h"

namespace sendense {

struct DirIndex {
  std::unordered_map<std::string, uint64_t> names;  // the first entry of a name wins
  std::unordered_set<std::string> refused;          // listed but not served (NTFS: records past 2^40)

  // An index of `entries` (a reader's listing).
  static DirIndex of(std::vector<DirEntry> entries);
  // What it holds, about: names plus a hash node each.
  size_t bytes() const;
};

class DirIndexCache {
 public:
  explicit DirIndexCache(CacheBudgetPtr budget);

  // The index of `dir`: kept, or built now by `build` (two threads missing
  // the same folder both build it; one is kept).
  template <typename Build>
  std::shared_ptr<const DirIndex> get(uint64_t dir, Build&& build) {
    if (auto hit = cache_.find(dir)) return hit;
    auto index = std::make_shared<const DirIndex>(build());
    const size_t weight = index->bytes();
    return cache_.insert(dir, std::move(index), weight);
  }

 private:
  ext::SharedLru<DirIndex> cache_;
};

}  // namespace sendense
