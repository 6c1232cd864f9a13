// Fuzz target: XFS through our reader (readers/fs/xfs/): superblock, log head, inodes, every directory and attribute fork format.
// Input: a sparse image (fuzz_support.h). Opens the volume as the engine
// does and walks it: every directory, getattr, every file read, every xattr.
#include <cstddef>
#include <cstdint>

#include "readers/fs/xfs/xfs_filesystem.h"
#include "readers/common/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  BlockDevicePtr dev = fuzz::make_memory_device(fuzz::parse_sparse(data, size), "fuzz-xfs");
  FilesystemPtr fs;
  try {
    fs = open_xfs_filesystem(dev, "fuzz-xfs");
  } catch (const Error&) {
    return 0;  // refused: damaged or not xfs
  }
  fuzz::walk(*fs);
  return 0;
}
