#include "readers/fs/dir_index.h"

namespace sendense {

namespace {

// Per volume, whatever the budget: 64 folders, 256 MiB. The index last used
// stays pinned (SharedLru::Pin::last), even past the budget or heavier than
// it (a million names is about 80 MiB): lookups of a big folder's names one
// after another must not list it again each time (the readers' own cap on a
// listing bounds it).
constexpr size_t kDirIndexFolders = 64;
constexpr size_t kDirIndexBytes = 256u << 20;
constexpr size_t kNodeBytes = 64;  // an unordered_map node with its string header, and its bucket

}  // namespace

DirIndex DirIndex::of(std::vector<DirEntry> entries) {
  DirIndex index;
  index.names.reserve(entries.size());
  for (DirEntry& e : entries) index.names.try_emplace(std::move(e.name), e.ino);
  return index;
}

size_t DirIndex::bytes() const {
  size_t total = (names.size() + refused.size()) * kNodeBytes;
  for (const auto& entry : names) total += entry.first.size();
  for (const auto& name : refused) total += name.size();
  return total;
}

DirIndexCache::DirIndexCache(CacheBudgetPtr budget)
    : cache_(kDirIndexFolders, kDirIndexBytes, std::move(budget), ext::SharedLru<DirIndex>::Pin::last) {}

}  // namespace sendense
