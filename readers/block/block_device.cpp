// The free functions of block_device.h: format names, open_image (which
// reader serves an image), range checks.
#include "readers/block/block_device.h"
#include "readers/block/image_chain.h"
#include "readers/common/error.h"

namespace sendense {

const char* to_string(ImageFormat f) {
  switch (f) {
    case ImageFormat::raw: return "raw";
    case ImageFormat::qcow2: return "qcow2";
    case ImageFormat::vmdk: return "vmdk";
    case ImageFormat::vhdx: return "vhdx";
  }
  return "?";
}

ImageFormat image_format_from_string(const std::string& s) {
  if (s == "raw") return ImageFormat::raw;
  if (s == "qcow2") return ImageFormat::qcow2;
  if (s == "vmdk") return ImageFormat::vmdk;
  if (s == "vhdx") return ImageFormat::vhdx;
  throw Error(EINVAL, "unknown image format '" + s + "' (expected qcow2, raw, vmdk or vhdx)");
}

void require_in_range(const BlockDevice& dev, uint64_t offset, uint64_t length) {
  const uint64_t total = dev.size();
  if (offset > total || length > total - offset)
    throw Error(EIO, "read of " + std::to_string(length) + " bytes at offset " + std::to_string(offset) +
                         " is past the end (" + std::to_string(total) + " bytes)", dev.describe());
}

void append_extent(std::vector<Extent>& out, const ImageFile* file, uint64_t offset, uint64_t length) {
  if (length == 0) return;
  if (!out.empty()) {
    Extent& last = out.back();
    if (last.file == file && (file == nullptr || last.offset + last.length == offset)) {
      last.length += length;
      return;
    }
  }
  out.push_back(Extent{file, file ? offset : 0, length});
}

BlockDevicePtr open_image(const std::string& path, ImageFormat format, const std::string& confine_root,
                          QemuOpener qemu, CacheBudgetPtr budget) {
  if (format == ImageFormat::raw) return open_raw_image(path);
  // One validation of the whole chain by our code, each file opened once,
  // then the reader that can read all of it: ours for qcow2 chains, qemu
  // for chains holding VMDK or VHDX.
  std::vector<image_chain::Link> links = image_chain::resolve(path, format, confine_root);
  std::vector<ChainLink> chain;
  for (const auto& link : links) chain.push_back(link.info);
  if (choose_reader(chain) == "qcow2") return open_qcow2_chain(std::move(links), std::move(budget));
  if (!qemu) throw Error(ENOTSUP, "this chain is read by qemu-nbd, which this program does not run", path);
  return qemu(chain, path);
}

}  // namespace sendense
