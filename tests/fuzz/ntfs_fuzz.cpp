// Fuzz target: NTFS through libntfs-3g over our ntfs_device (ntfs_device.cpp), reparse points and names.
// Input: a sparse image (fuzz_support.h). Opens the volume as the engine
// does and walks it: every directory, getattr, every file read, every xattr.
#include <cstddef>
#include <cstdint>
#include <string>

#include "readers/fs/ntfs/ntfs_filesystem.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return sendense::fuzz::open_and_walk(data, size, "fuzz-ntfs", [](const sendense::BlockDevicePtr& dev, const std::string& n) {
    return sendense::open_ntfs_filesystem(dev, n);
  });
}
