// A regular file's data as runs of filesystem blocks: how the ext and XFS
// readers map a file once (into an immutable list kept in their map
// caches) and then read it, or tell where it lies, with no library call
// and no lock.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "readers/block/block_device.h"

namespace sendense {

struct BlockRun {
  uint64_t logical = 0;   // file block
  uint64_t physical = 0;  // filesystem block
  uint64_t length = 0;    // blocks
};

// Fills `out` with the file's bytes from `offset` (the caller cut `out` to
// the file's size): runs from `device`, holes between and after them as
// zeros. `runs` ascending, not overlapping. A device error is rethrown
// with `where` as its place.
void read_block_runs(const BlockDevice& device, std::span<const BlockRun> runs, uint64_t block_size,
                     uint64_t offset, std::span<std::byte> out, const std::string& where);

// Where the file's bytes [offset, offset + length) lie (BlockDevice::map;
// the caller cut them to the file's size), holes as zeros; nullopt where
// the device cannot say or past `max_extents`.
std::optional<std::vector<Extent>> map_block_runs(const BlockDevice& device, std::span<const BlockRun> runs,
                                                  uint64_t block_size, uint64_t offset, uint64_t length,
                                                  size_t max_extents);

}  // namespace sendense
