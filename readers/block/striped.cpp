// RAID-0 style striping (an LVM striped segment): chunk c of the whole lies
// on stripe c % n, at row c / n of that stripe. A read is split at chunk
// boundaries; consecutive chunks on different stripes are separate reads.
#include <algorithm>

#include "readers/block/block_device.h"
#include "readers/common/error.h"

namespace sendense {

namespace {

class Striped final : public BlockDevice {
 public:
  Striped(std::vector<BlockDevicePtr> stripes, uint64_t chunk, uint64_t total, std::string name)
      : stripes_(std::move(stripes)), chunk_(chunk), total_(total), name_(std::move(name)) {}

  uint64_t size() const override { return total_; }
  std::string describe() const override { return name_; }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    const uint64_t n = stripes_.size();
    size_t done = 0;
    while (done < buf.size()) {
      const uint64_t pos = offset + done;
      const uint64_t c = pos / chunk_;
      const uint64_t within = pos % chunk_;
      const uint64_t len = std::min<uint64_t>(buf.size() - done, chunk_ - within);
      stripes_[static_cast<size_t>(c % n)]->read_at((c / n) * chunk_ + within, buf.subspan(done, static_cast<size_t>(len)));
      done += static_cast<size_t>(len);
    }
  }

 private:
  std::vector<BlockDevicePtr> stripes_;
  uint64_t chunk_;
  uint64_t total_;
  std::string name_;
};

}  // namespace

BlockDevicePtr make_striped(std::vector<BlockDevicePtr> stripes, uint64_t chunk_size, const std::string& name) {
  if (stripes.empty()) throw Error(EINVAL, "striping needs at least one stripe", name);
  if (stripes.size() == 1 && stripes.front()) return stripes.front();  // linear: no chunk size needed
  if (chunk_size == 0) throw Error(EINVAL, "stripe size 0", name);
  const uint64_t each = stripes.front() ? stripes.front()->size() : 0;
  for (const auto& s : stripes) {
    if (!s) throw Error(EINVAL, "a stripe is missing", name);
    if (s->size() != each) throw Error(EINVAL, "stripes of different sizes", name);
  }
  if (each % chunk_size != 0)
    throw Error(EINVAL, "stripe length " + std::to_string(each) + " is not a multiple of the stripe size " +
                            std::to_string(chunk_size), name);
  if (each > UINT64_MAX / stripes.size()) throw Error(EINVAL, "striped device larger than 2^64 bytes", name);
  const uint64_t total = each * stripes.size();
  return std::make_shared<Striped>(std::move(stripes), chunk_size, total, name);
}

}  // namespace sendense
