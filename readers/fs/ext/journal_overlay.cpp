#include "readers/fs/ext/journal_overlay.h"

#include <algorithm>

#include "readers/common/error.h"

namespace sendense::ext {

namespace {

constexpr std::byte kMagicBytes[4] = {std::byte{0xC0}, std::byte{0x3B}, std::byte{0x39}, std::byte{0x98}};

class JournalOverlay final : public BlockDevice {
 public:
  JournalOverlay(BlockDevicePtr volume, uint64_t block_size, std::vector<BlockCopy> copies)
      : volume_(std::move(volume)), bs_(block_size), copies_(std::move(copies)) {}

  uint64_t size() const override { return volume_->size(); }
  std::string describe() const override { return volume_->describe() + " (journal replayed)"; }

  // Unmapped stretches go to the volume in one read each; a large file read
  // crossing no replayed block is a single read.
  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    const uint64_t end = offset + buf.size();
    auto it = std::lower_bound(copies_.begin(), copies_.end(), offset / bs_,
                               [](const BlockCopy& c, uint64_t block) { return c.fs_block < block; });
    uint64_t pos = offset;
    while (pos < end) {
      const uint64_t mapped_start = it == copies_.end() ? end : std::max(pos, std::min(end, it->fs_block * bs_));
      if (pos < mapped_start) {
        volume_->read_at(pos, buf.subspan(pos - offset, mapped_start - pos));
        pos = mapped_start;
        continue;
      }
      const uint64_t block_start = it->fs_block * bs_;
      const uint64_t in_block = pos - block_start;
      const uint64_t n = std::min(end, block_start + bs_) - pos;
      std::span<std::byte> out = buf.subspan(pos - offset, n);
      volume_->read_at(it->device_offset + in_block, out);
      if (it->escaped && in_block < 4)
        std::copy(kMagicBytes + in_block, kMagicBytes + std::min<uint64_t>(4, in_block + n), out.begin());
      pos += n;
      ++it;
    }
  }
  // As read_at: a replayed block is its journal copy, unless the copy is
  // escaped (its first bytes are rewritten on the way).
  bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const override {
    require_in_range(*this, offset, length);
    const uint64_t end = offset + length;
    auto it = std::lower_bound(copies_.begin(), copies_.end(), offset / bs_,
                               [](const BlockCopy& c, uint64_t block) { return c.fs_block < block; });
    uint64_t pos = offset;
    while (pos < end) {
      const uint64_t mapped_start = it == copies_.end() ? end : std::max(pos, std::min(end, it->fs_block * bs_));
      if (pos < mapped_start) {
        if (!volume_->map(pos, mapped_start - pos, out)) return false;
        pos = mapped_start;
        continue;
      }
      const uint64_t block_start = it->fs_block * bs_;
      const uint64_t in_block = pos - block_start;
      const uint64_t n = std::min(end, block_start + bs_) - pos;
      if (it->escaped && in_block < 4) return false;
      if (!volume_->map(it->device_offset + in_block, n, out)) return false;
      pos += n;
      ++it;
    }
    return true;
  }

 private:
  BlockDevicePtr volume_;
  uint64_t bs_;
  std::vector<BlockCopy> copies_;
};

}  // namespace

BlockDevicePtr make_journal_overlay(BlockDevicePtr volume, uint64_t block_size, std::vector<BlockCopy> copies) {
  for (const BlockCopy& c : copies)
    if (c.device_offset > volume->size() || volume->size() - c.device_offset < block_size ||
        c.fs_block >= volume->size() / block_size)
      throw Error(EIO, "journal copy of block " + std::to_string(c.fs_block) + " lies outside the volume",
                  volume->describe());
  return std::make_shared<JournalOverlay>(std::move(volume), block_size, std::move(copies));
}

}  // namespace sendense::ext
