// Fuzz target: XFS through our reader (readers/fs/xfs/): superblock, log head, inodes, every directory and attribute fork format.
// Input: a sparse image (fuzz_support.h). Opens the volume as the engine
// does and walks it: every directory, getattr, every file read, every xattr.
#include <cstddef>
#include <cstdint>
#include <string>

#include "readers/fs/xfs/xfs_filesystem.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return sendense::fuzz::open_and_walk(data, size, "fuzz-xfs", [](const sendense::BlockDevicePtr& dev, const std::string& n) {
    return sendense::open_xfs_filesystem(dev, n);
  });
}
