// The free functions of block_device.h: format names, open_image, range checks.
#include "readers/block/block_device.h"
#include "readers/common/error.h"

namespace sendense {

const char* to_string(ImageFormat f) {
  switch (f) {
    case ImageFormat::raw: return "raw";
    case ImageFormat::qcow2: return "qcow2";
  }
  return "?";
}

ImageFormat image_format_from_string(const std::string& s) {
  if (s == "raw") return ImageFormat::raw;
  if (s == "qcow2") return ImageFormat::qcow2;
  throw Error(EINVAL, "unknown image format '" + s + "' (expected qcow2 or raw)");
}

void require_in_range(const BlockDevice& dev, uint64_t offset, uint64_t length) {
  const uint64_t total = dev.size();
  if (offset > total || length > total - offset)
    throw Error(EIO, "read of " + std::to_string(length) + " bytes at offset " + std::to_string(offset) +
                         " is past the end (" + std::to_string(total) + " bytes)", dev.describe());
}

BlockDevicePtr open_image(const std::string& path, ImageFormat format, const std::string& confine_root) {
  switch (format) {
    case ImageFormat::raw: return open_raw_image(path);
    case ImageFormat::qcow2: return open_qcow2_image(path, confine_root);
  }
  throw Error(EINVAL, "unknown image format", path);
}

}  // namespace sendense
