// Fuzz target: NTFS through libntfs-3g over our ntfs_device (ntfs_device.cpp), reparse points and names.
// Input: a sparse image (fuzz_support.h). Opens the volume as the engine
// does and walks it: every directory, getattr, every file read, every xattr.
#include <cstddef>
#include <cstdint>

#include "readers/fs/ntfs/ntfs_filesystem.h"
#include "readers/common/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  BlockDevicePtr dev = fuzz::make_memory_device(fuzz::parse_sparse(data, size), "fuzz-ntfs");
  FilesystemPtr fs;
  try {
    fs = open_ntfs_filesystem(dev, "fuzz-ntfs");
  } catch (const Error&) {
    return 0;  // refused: damaged or not ntfs
  }
  fuzz::walk(*fs);
  return 0;
}
