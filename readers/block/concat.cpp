// Devices joined end to end: an LV made of several segments. A read that
// crosses a boundary is split between the parts it touches.
#include <algorithm>

#include "readers/block/block_device.h"
#include "readers/common/error.h"

namespace sendense {

namespace {

class Concat final : public BlockDevice {
 public:
  Concat(std::vector<BlockDevicePtr> parts, std::vector<uint64_t> starts, uint64_t total, std::string name)
      : parts_(std::move(parts)), starts_(std::move(starts)), total_(total), name_(std::move(name)) {}

  uint64_t size() const override { return total_; }
  std::string describe() const override { return name_; }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    walk(offset, buf.size(), [&](const BlockDevice& part, uint64_t within, uint64_t done, uint64_t n) {
      part.read_at(within, buf.subspan(static_cast<size_t>(done), static_cast<size_t>(n)));
      return true;
    });
  }
  bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const override {
    require_in_range(*this, offset, length);
    return walk(offset, length, [&](const BlockDevice& part, uint64_t within, uint64_t, uint64_t n) {
      return part.map(within, n, out);
    });
  }

 private:
  // Calls piece(part, offset in it, bytes done, length) for each part the
  // range touches, in order; stops at the first false.
  template <typename Piece>
  bool walk(uint64_t offset, uint64_t length, Piece&& piece) const {
    // The part holding `offset`: the last one starting at or before it.
    size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), offset) - starts_.begin()) - 1;
    for (uint64_t done = 0; done < length; ++i) {
      const uint64_t within = offset + done - starts_[i];
      const uint64_t n = std::min(length - done, parts_[i]->size() - within);
      if (!piece(*parts_[i], within, done, n)) return false;
      done += n;
    }
    return true;
  }

  std::vector<BlockDevicePtr> parts_;
  std::vector<uint64_t> starts_;  // offset of each part in the whole, ascending
  uint64_t total_;
  std::string name_;
};

}  // namespace

BlockDevicePtr make_concat(std::vector<BlockDevicePtr> parts, const std::string& name) {
  if (parts.empty()) throw Error(EINVAL, "a concatenation needs at least one part", name);
  if (parts.size() == 1) return parts.front();
  std::vector<BlockDevicePtr> kept;
  std::vector<uint64_t> starts;
  uint64_t total = 0;
  for (auto& p : parts) {
    if (!p) throw Error(EINVAL, "a concatenation part is missing", name);
    const uint64_t s = p->size();
    if (s == 0) continue;  // an empty part would make two parts start at one offset
    if (s > UINT64_MAX - total) throw Error(EINVAL, "concatenation larger than 2^64 bytes", name);
    starts.push_back(total);
    total += s;
    kept.push_back(std::move(p));
  }
  if (kept.empty()) throw Error(EINVAL, "a concatenation of empty parts", name);
  return std::make_shared<Concat>(std::move(kept), std::move(starts), total, name);
}

}  // namespace sendense
