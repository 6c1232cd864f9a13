// Fuzz target: our qcow2 reader (readers/block/qcow2_header.cpp,
// image_chain.cpp, qcow2_image.cpp): header, header extensions, backing
// name resolution, the L1/L2 walk, extended L2 entries, zero clusters and
// compressed-cluster descriptors (zlib and zstd).
// Input: a sparse image (fuzz_support.h) written to a file, opened with
// open_qcow2_image as the engine does. A raw backing file "base.raw" and a
// qcow2-named "base.qcow2" (raw bytes: refused as qcow2) sit next to it.
// Reads the first 4 MiB of the virtual disk, and its last 64 KiB.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/block/image_file.h"
#include "readers/common/error.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

void make_backing_files() {
  using namespace sendense::fuzz;
  static const bool made = [] {
    SparseImage base;
    base.size = 1u << 20;
    Extent pattern;
    pattern.offset = 4096;
    pattern.bytes.assign(8192, std::byte{0x5a});
    base.extents.push_back(pattern);
    write_image_file(base, "base.raw");
    write_image_file(base, "base.qcow2");
    return true;
  }();
  (void)made;
}

// Where map() says the bytes of a read lie must be what the read gave
// (the daemon copies a worker's small files by their maps): a difference
// is a bug, reported as a crash.
void check_map(const sendense::BlockDevice& dev, uint64_t offset, std::span<const std::byte> read) {
  std::vector<sendense::Extent> extents;
  try {
    if (!dev.map(offset, read.size(), extents)) return;
  } catch (const sendense::Error&) {
    return;
  }
  std::vector<std::byte> copied(read.size());
  size_t done = 0;
  for (const sendense::Extent& e : extents) {
    if (e.length > copied.size() - done) __builtin_trap();
    try {
      if (e.file) e.file->read_exact(copied.data() + done, e.length, e.offset, "fuzz map");
    } catch (const sendense::Error&) {
      __builtin_trap();  // the read worked: so must a copy by its map
    }
    done += e.length;
  }
  if (done != copied.size() || std::memcmp(copied.data(), read.data(), read.size()) != 0) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  make_backing_files();
  const std::string path = fuzz::write_image_file(fuzz::parse_sparse(data, size), "top.qcow2");
  BlockDevicePtr dev;
  try {
    dev = open_qcow2_image(path, fuzz::scratch_dir());
  } catch (const Error&) {
    return 0;  // refused: damaged, unsupported, or not qcow2
  }
  std::vector<std::byte> buf(64 * 1024);
  const uint64_t end = dev->size();
  const uint64_t cap = std::min<uint64_t>(end, 4u << 20);
  try {
    for (uint64_t off = 0; off < cap; off += buf.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), cap - off));
      try {
        dev->read_at(off, std::span<std::byte>(buf.data(), n));
        check_map(*dev, off, std::span<const std::byte>(buf.data(), n));
      } catch (const Error&) {
        // a damaged table or cluster: the next read may still work
      }
    }
    if (end > cap) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - cap));
      dev->read_at(end - n, std::span<std::byte>(buf.data(), n));
    }
    // Unaligned, crossing a cluster boundary.
    if (end > 4097) {
      dev->read_at(511, std::span<std::byte>(buf.data(), 3587));
      check_map(*dev, 511, std::span<const std::byte>(buf.data(), 3587));
    }
  } catch (const Error&) {
  }
  return 0;
}
