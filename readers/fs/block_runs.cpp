#include "readers/fs/block_runs.h"

#include <algorithm>

#include "readers/common/error.h"

namespace sendense {

void read_block_runs(const BlockDevice& device, std::span<const BlockRun> runs, uint64_t block_size,
                     uint64_t offset, std::span<std::byte> out, const std::string& where) {
  const uint64_t bs = block_size;
  // First run that ends after `offset`.
  auto it = std::upper_bound(runs.begin(), runs.end(), offset / bs,
                             [](uint64_t block, const BlockRun& r) { return block < r.logical + r.length; });
  uint64_t pos = offset;
  size_t done = 0;
  const uint64_t want_end = offset + out.size();
  while (done < out.size()) {
    if (it == runs.end() || pos < it->logical * bs) {
      // A hole up to the next run (or the end).
      const uint64_t hole_end = it == runs.end() ? want_end : std::min(want_end, it->logical * bs);
      const size_t n = static_cast<size_t>(hole_end - pos);
      std::fill_n(out.begin() + static_cast<std::ptrdiff_t>(done), n, std::byte{0});
      pos += n;
      done += n;
      continue;
    }
    const uint64_t run_end = (it->logical + it->length) * bs;
    const size_t n = static_cast<size_t>(std::min(want_end, run_end) - pos);
    const uint64_t device_offset = it->physical * bs + (pos - it->logical * bs);
    try {
      device.read_at(device_offset, out.subspan(done, n));
    } catch (const Error& e) {
      throw Error(e.code(), e.what(), where);
    }
    pos += n;
    done += n;
    ++it;
  }
}

std::optional<std::vector<Extent>> map_block_runs(const BlockDevice& device, std::span<const BlockRun> runs,
                                                  uint64_t block_size, uint64_t offset, uint64_t length,
                                                  size_t max_extents) {
  const uint64_t bs = block_size;
  const uint64_t end = offset + length;
  // First run that ends after `offset`.
  auto it = std::upper_bound(runs.begin(), runs.end(), offset / bs,
                             [](uint64_t block, const BlockRun& r) { return block < r.logical + r.length; });
  std::vector<Extent> out;
  uint64_t pos = offset;
  for (; it != runs.end() && pos < end; ++it) {
    const uint64_t start = it->logical * bs;
    if (start >= end) break;
    if (start > pos) {
      append_extent(out, nullptr, 0, start - pos);  // the hole before the run
      pos = start;
    }
    const uint64_t n = std::min(end, (it->logical + it->length) * bs) - pos;
    if (!device.map(it->physical * bs + (pos - start), n, out) || out.size() > max_extents) return std::nullopt;
    pos += n;
  }
  append_extent(out, nullptr, 0, end - pos);
  if (out.size() > max_extents) return std::nullopt;
  return out;
}

}  // namespace sendense
