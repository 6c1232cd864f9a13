// A read cache over a BlockDevice: fixed-size aligned chunks, least recently
// used evicted. Meant for metadata (inode tables, directories, extent
// blocks), where a library reads the same small blocks again and again; file
// data goes around it (the kernel's page cache holds that).
#include <algorithm>
#include <memory>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/common/shared_lru.h"

namespace sendense {

namespace {

class BlockCache final : public BlockDevice {
 public:
  BlockCache(BlockDevicePtr parent, size_t chunk_size, size_t capacity, CacheBudgetPtr budget)
      : parent_(std::move(parent)), chunk_size_(chunk_size), chunks_(capacity, capacity * chunk_size, std::move(budget)) {}

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
      const auto chunk = chunk_at(index);
      const size_t n = std::min(buf.size() - done, chunk->size() - within);
      std::copy_n(chunk->begin() + static_cast<std::ptrdiff_t>(within), n, buf.begin() + static_cast<std::ptrdiff_t>(done));
      done += n;
    }
  }
  bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const override {
    return parent_->map(offset, length, out);
  }

 private:
  using Chunk = std::vector<std::byte>;

  // The last chunk may be shorter than chunk_size_. Two threads missing the
  // same chunk both read it; the cache keeps one.
  std::shared_ptr<const Chunk> chunk_at(uint64_t index) const {
    if (auto hit = chunks_.find(index)) return hit;
    const uint64_t start = index * chunk_size_;
    auto data = std::make_shared<Chunk>(static_cast<size_t>(std::min<uint64_t>(chunk_size_, parent_->size() - start)));
    parent_->read_at(start, *data);
    const size_t weight = data->size();
    return chunks_.insert(index, std::move(data), weight);
  }

  BlockDevicePtr parent_;
  size_t chunk_size_;
  mutable ext::SharedLru<Chunk> chunks_;
};

}  // namespace

BlockDevicePtr make_block_cache(BlockDevicePtr parent, size_t chunk_size, size_t capacity, CacheBudgetPtr budget) {
  if (chunk_size == 0 || capacity == 0) throw Error(EINVAL, "block cache needs a chunk size and a capacity");
  return std::make_shared<BlockCache>(std::move(parent), chunk_size, capacity, std::move(budget));
}

}  // namespace sendense
