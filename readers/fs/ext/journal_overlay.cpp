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
    walk(offset, buf.size(), [&](uint64_t pos, uint64_t from, uint64_t n, const BlockCopy* copy) {
      std::span<std::byte> out = buf.subspan(pos - offset, n);
      volume_->read_at(from, out);
      const uint64_t in_block = copy ? pos - copy->fs_block * bs_ : 4;
      if (copy && copy->escaped && in_block < 4)
        std::copy(kMagicBytes + in_block, kMagicBytes + std::min<uint64_t>(4, in_block + n), out.begin());
      return true;
    });
  }
  // As read_at: a replayed block is its journal copy, unless the copy is
  // escaped (its first bytes are rewritten on the way).
  bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const override {
    require_in_range(*this, offset, length);
    return walk(offset, length, [&](uint64_t pos, uint64_t from, uint64_t n, const BlockCopy* copy) {
      if (copy && copy->escaped && pos - copy->fs_block * bs_ < 4) return false;
      return volume_->map(from, n, out);
    });
  }

 private:
  // Calls piece(pos, volume offset, length, the copy or nullptr) for each
  // stretch of [offset, offset + length) in order: unreplayed stretches
  // whole, replayed blocks one by one. Stops at the first false.
  template <typename Piece>
  bool walk(uint64_t offset, uint64_t length, Piece&& piece) const {
    const uint64_t end = offset + length;
    auto it = std::lower_bound(copies_.begin(), copies_.end(), offset / bs_,
                               [](const BlockCopy& c, uint64_t block) { return c.fs_block < block; });
    uint64_t pos = offset;
    while (pos < end) {
      const uint64_t mapped_start = it == copies_.end() ? end : std::max(pos, std::min(end, it->fs_block * bs_));
      if (pos < mapped_start) {
        if (!piece(pos, pos, mapped_start - pos, nullptr)) return false;
        pos = mapped_start;
        continue;
      }
      const uint64_t block_start = it->fs_block * bs_;
      const uint64_t n = std::min(end, block_start + bs_) - pos;
      if (!piece(pos, it->device_offset + (pos - block_start), n, &*it)) return false;
      pos += n;
      ++it;
    }
    return true;
  }

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
