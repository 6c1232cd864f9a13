// Fuzz target: partition tables (readers/volume/partition_table.cpp: MBR
// with EBR chains, GPT with its backup header) and filesystem detection on
// every volume (detect.cpp, discover.cpp). Input: a sparse disk image
// (fuzz_support.h).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "readers/common/error.h"
#include "readers/volume/volume.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  BlockDevicePtr disk = fuzz::make_memory_device(fuzz::parse_sparse(data, size), "fuzz-disk");
  try {
    (void)read_partition_table(*disk);
  } catch (const Error&) {
  }
  try {
    const DiskLayout layout = discover_volumes(disk);
    std::vector<std::byte> buf(4096);
    for (const Volume& v : layout.volumes) {
      (void)to_string(v.type);
      if (!v.device || v.device->size() == 0) continue;
      const size_t n = v.device->size() < buf.size() ? static_cast<size_t>(v.device->size()) : buf.size();
      v.device->read_at(0, std::span<std::byte>(buf.data(), n));
      v.device->read_at(v.device->size() - n, std::span<std::byte>(buf.data(), n));
    }
  } catch (const Error&) {
  }
  return 0;
}
