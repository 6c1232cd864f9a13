// A read cache over a BlockDevice: fixed-size aligned chunks, least recently
// used evicted. Meant for metadata (inode tables, directories, extent
// blocks), where a library reads the same small blocks again and again; file
// data goes around it (the kernel's page cache holds that).
#include <algorithm>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/common/error.h"

namespace sendense {

namespace {

class BlockCache final : public BlockDevice {
 public:
  BlockCache(BlockDevicePtr parent, size_t chunk_size, size_t capacity)
      : parent_(std::move(parent)), chunk_size_(chunk_size), capacity_(capacity) {}

  uint64_t size() const override { return parent_->size(); }
  std::string describe() const override { return parent_->describe(); }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    if (buf.size() > chunk_size_ * 4) {  // large reads gain nothing from the cache
      parent_->read_at(offset, buf);
      return;
    }
    size_t done = 0;
    while (done < buf.size()) {
      const uint64_t pos = offset + done;
      const uint64_t index = pos / chunk_size_;
      const size_t within = static_cast<size_t>(pos % chunk_size_);
      std::lock_guard lock(mutex_);
      const std::vector<std::byte>& chunk = chunk_at(index);
      const size_t n = std::min(buf.size() - done, chunk.size() - within);
      std::copy_n(chunk.begin() + static_cast<std::ptrdiff_t>(within), n, buf.begin() + static_cast<std::ptrdiff_t>(done));
      done += n;
    }
  }

 private:
  using Lru = std::list<std::pair<uint64_t, std::vector<std::byte>>>;

  // Called with mutex_ held. The last chunk may be shorter than chunk_size_.
  const std::vector<std::byte>& chunk_at(uint64_t index) const {
    if (auto it = map_.find(index); it != map_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
    const uint64_t start = index * chunk_size_;
    std::vector<std::byte> data(static_cast<size_t>(std::min<uint64_t>(chunk_size_, parent_->size() - start)));
    parent_->read_at(start, data);
    if (map_.size() >= capacity_) {
      map_.erase(lru_.back().first);
      lru_.pop_back();
    }
    lru_.emplace_front(index, std::move(data));
    map_[index] = lru_.begin();
    return lru_.front().second;
  }

  BlockDevicePtr parent_;
  size_t chunk_size_;
  size_t capacity_;
  mutable std::mutex mutex_;
  mutable Lru lru_;
  mutable std::unordered_map<uint64_t, Lru::iterator> map_;
};

}  // namespace

BlockDevicePtr make_block_cache(BlockDevicePtr parent, size_t chunk_size, size_t capacity) {
  if (chunk_size == 0 || capacity == 0) throw Error(EINVAL, "block cache needs a chunk size and a capacity");
  return std::make_shared<BlockCache>(std::move(parent), chunk_size, capacity);
}

}  // namespace sendense
