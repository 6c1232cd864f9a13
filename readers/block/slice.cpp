// A window over a parent device: a partition, later an LV segment.
#include "readers/block/block_device.h"
#include "readers/common/error.h"

namespace sendense {

namespace {

class Slice final : public BlockDevice {
 public:
  Slice(BlockDevicePtr parent, uint64_t offset, uint64_t length, std::string name)
      : parent_(std::move(parent)), offset_(offset), length_(length), name_(std::move(name)) {}

  uint64_t size() const override { return length_; }
  std::string describe() const override { return parent_->describe() + " " + name_; }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    parent_->read_at(offset_ + offset, buf);
  }
  bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const override {
    require_in_range(*this, offset, length);
    return parent_->map(offset_ + offset, length, out);
  }

 private:
  BlockDevicePtr parent_;
  uint64_t offset_;
  uint64_t length_;
  std::string name_;
};

}  // namespace

BlockDevicePtr make_slice(BlockDevicePtr parent, uint64_t offset, uint64_t length, const std::string& name) {
  const uint64_t total = parent->size();
  if (offset > total || length > total - offset)
    throw Error(EINVAL, name + " [" + std::to_string(offset) + ", +" + std::to_string(length) +
                            ") does not fit in the device (" + std::to_string(total) + " bytes)", parent->describe());
  return std::make_shared<Slice>(std::move(parent), offset, length, name);
}

}  // namespace sendense
