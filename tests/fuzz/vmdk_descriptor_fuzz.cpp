// Fuzz target: what we check in a VMDK before qemu-nbd opens it
// (readers/block/vmdk_descriptor.cpp through image_chain.cpp): text
// descriptors, sparse VMDKs with an embedded descriptor, extent lines and
// the confinement of the names they hold; a "vhdxfile" input goes to the
// VHDX check. Input: a sparse image (fuzz_support.h) written as disk.vmdk
// in a folder that also holds disk-flat.vmdk and disk-s001.vmdk extents.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  static const bool made = [] {
    fuzz::SparseImage extent;
    extent.size = 1u << 20;
    fuzz::write_image_file(extent, "disk-flat.vmdk");
    fuzz::write_image_file(extent, "disk-s001.vmdk");
    return true;
  }();
  (void)made;
  const fuzz::SparseImage image = fuzz::parse_sparse(data, size);
  bool vhdx = false;
  if (!image.extents.empty() && image.extents.front().offset == 0 && image.extents.front().bytes.size() >= 8)
    vhdx = std::memcmp(image.extents.front().bytes.data(), "vhdxfile", 8) == 0;
  const std::string path = fuzz::write_image_file(image, vhdx ? "disk.vhdx" : "disk.vmdk");
  try {
    const std::vector<ChainLink> chain =
        read_image_chain(path, vhdx ? ImageFormat::vhdx : ImageFormat::vmdk, fuzz::scratch_dir());
    (void)choose_reader(chain);
  } catch (const Error&) {
    // refused: expected for most inputs
  }
  return 0;
}
