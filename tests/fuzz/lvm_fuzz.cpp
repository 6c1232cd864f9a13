// Fuzz target: LVM2 without device-mapper (readers/volume/lvm_label.cpp,
// lvm_config.cpp, lvm_metadata.cpp, lvm_assemble.cpp). A sparse image
// (fuzz_support.h) is one disk of a backup: discover_backup reads its
// partition table, the PV labels and metadata areas of its volumes, parses
// the VG text and assembles the LVs, which are then read (first and last
// 4 KiB, and 64 KiB steps across the first 1 MiB: segment and stripe
// boundaries). Any other input is metadata text, parsed directly.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "readers/common/error.h"
#include "readers/volume/lvm.h"
#include "readers/volume/volume.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  if (size < 4 || std::memcmp(data, "SPX1", 4) != 0) {
    try {
      const LvmVgMetadata vg =
          parse_lvm_metadata(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz-metadata");
      for (const LvmLvMetadata& lv : vg.lvs) (void)lv.type();
    } catch (const Error&) {
    }
    return 0;
  }
  BlockDevicePtr disk = fuzz::make_memory_device(fuzz::parse_sparse(data, size), "fuzz-disk");
  try {
    (void)read_lvm_label(*disk);
  } catch (const Error&) {
  }
  try {
    const BackupLayout layout = discover_backup({disk});
    std::vector<std::byte> buf(4096);
    for (const Volume& v : layout.volumes) {
      if (!v.device || v.device->size() == 0) continue;
      const uint64_t vsize = v.device->size();
      const size_t n = static_cast<size_t>(std::min<uint64_t>(vsize, buf.size()));
      try {
        v.device->read_at(0, std::span<std::byte>(buf.data(), n));
        v.device->read_at(vsize - n, std::span<std::byte>(buf.data(), n));
        for (uint64_t off = 65536 - 2048; off + n <= std::min<uint64_t>(vsize, 1u << 20); off += 65536)
          v.device->read_at(off, std::span<std::byte>(buf.data(), n));
      } catch (const Error&) {
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
