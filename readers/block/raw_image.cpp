// A raw disk image: a plain file read with pread through the descriptor
// opened once at attach (image_file.h: regular files only, changes seen).
#include "readers/block/block_device.h"
#include "readers/block/image_file.h"

namespace sendense {

namespace {

class RawImage final : public BlockDevice {
 public:
  explicit RawImage(ImageFilePtr file) : file_(std::move(file)) {}

  uint64_t size() const override { return file_->size(); }
  std::string describe() const override { return file_->display(); }
  std::string reader() const override { return "raw"; }
  bool changed() const override { return file_->changed(); }
  bool check_changed() const override { return file_->check_changed(); }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    file_->read_exact(buf.data(), buf.size(), offset, "raw image");
  }
  bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const override {
    require_in_range(*this, offset, length);
    append_extent(out, file_.get(), offset, length);
    return true;
  }

 private:
  ImageFilePtr file_;
};

}  // namespace

BlockDevicePtr open_raw_image(const std::string& path) {
  return std::make_shared<RawImage>(ImageFile::open(path, path));
}

}  // namespace sendense
