// Fuzz target: ext2/3/4 through libext2fs over our io_manager (block_device_io_manager.cpp), with the journal replayed in memory when it needs recovery.
// Input: a sparse image (fuzz_support.h). Opens the volume as the engine
// does and walks it: every directory, getattr, every file read, every xattr.
#include <cstddef>
#include <cstdint>
#include <string>

#include "readers/fs/ext/ext_filesystem.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return sendense::fuzz::open_and_walk(data, size, "fuzz-ext", [](const sendense::BlockDevicePtr& dev, const std::string& n) {
    return sendense::open_ext_filesystem(dev, n);
  });
}
