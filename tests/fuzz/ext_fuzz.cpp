// Fuzz target: ext2/3/4 through libext2fs over our io_manager (block_device_io_manager.cpp), with the journal replayed in memory when it needs recovery.
// Input: a sparse image (fuzz_support.h). Opens the volume as the engine
// does and walks it: every directory, getattr, every file read, every xattr.
#include <cstddef>
#include <cstdint>

#include "readers/fs/ext/ext_filesystem.h"
#include "readers/common/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  BlockDevicePtr dev = fuzz::make_memory_device(fuzz::parse_sparse(data, size), "fuzz-ext");
  FilesystemPtr fs;
  try {
    fs = open_ext_filesystem(dev, "fuzz-ext");
  } catch (const Error&) {
    return 0;  // refused: damaged or not ext
  }
  fuzz::walk(*fs);
  return 0;
}
