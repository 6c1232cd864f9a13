// Fuzz target: the jbd2 journal of ext3/ext4 replayed in memory
// (readers/fs/ext/ext_journal.cpp, jbd2_replay.cpp, journal_overlay.cpp).
// Input: a sparse image (fuzz_support.h) of an ext volume. Once its
// superblock passes the reader's checks (as open_ext_filesystem does first),
// the journal inode is mapped and the log replayed; every block the replay
// maps is read back through the overlay (up to 4096), then the open path
// (open_ext_journal) runs as the ext reader calls it. The filesystem walk
// over the result is the ext target's job.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "readers/common/error.h"
#include "readers/fs/ext/ext_filesystem.h"
#include "readers/fs/ext/ext_journal.h"
#include "readers/fs/ext/journal_overlay.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sendense;
  BlockDevicePtr dev = fuzz::make_memory_device(fuzz::parse_sparse(data, size), "fuzz-journal");
  try {
    ext::check_superblock(*dev, "fuzz-journal");
  } catch (const Error&) {
    return 0;
  }
  try {
    ext::Jbd2Replay r = ext::replay_ext_journal(dev, "fuzz-journal");
    if (!r.copies.empty()) {
      std::vector<ext::BlockCopy> copies(r.copies.begin(),
                                         r.copies.begin() + std::min<size_t>(r.copies.size(), 4096));
      unsigned char sb[1024];
      dev->read_at(1024, std::as_writable_bytes(std::span(sb)));
      const uint64_t block_size = 1024u << std::min<uint32_t>(sb[24] | sb[25] << 8, 6);
      BlockDevicePtr overlay = ext::make_journal_overlay(dev, block_size, copies);
      std::vector<std::byte> buf(block_size);
      for (const ext::BlockCopy& c : copies) {
        if ((c.fs_block + 1) * block_size > overlay->size()) continue;
        overlay->read_at(c.fs_block * block_size, buf);
      }
    }
  } catch (const Error&) {
  }
  try {
    ext::JournaledDevice j = ext::open_ext_journal(dev, "fuzz-journal", true);
    std::vector<std::byte> buf(4096);
    if (j.device && j.device->size() >= buf.size()) j.device->read_at(0, buf);
  } catch (const Error&) {
  }
  return 0;
}
