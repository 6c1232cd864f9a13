#include "readers/fs/xfs/xfs_log.h"

#include <algorithm>
#include <vector>

namespace sendense::xfs {

namespace {

constexpr uint64_t kBB = 512;                  // log "basic block"
constexpr uint32_t kUnmountTrans = 0x20;       // XLOG_UNMOUNT_TRANS in an op header's flags
constexpr uint64_t kHeaderCycleSize = 32768;   // XLOG_HEADER_CYCLE_SIZE: one header block per 32 KiB of record
constexpr uint64_t kMaxRecordBBs = 2 * (256 * 1024 / kBB) + 16;  // search window: two maximal records

class LogReader {
 public:
  LogReader(const BlockDevice& device, uint64_t offset, uint64_t bbs) : device_(device), offset_(offset), bbs_(bbs) {}

  uint64_t size() const { return bbs_; }

  void read(uint64_t bb, unsigned char* out) const {
    device_.read_at(offset_ + (bb % bbs_) * kBB, std::as_writable_bytes(std::span(out, kBB)));
  }

  // The cycle number stamped on a basic block: a record header keeps it in
  // h_cycle, every other block in its first word.
  uint32_t cycle(uint64_t bb) const {
    unsigned char b[kBB];
    read(bb, b);
    return be32(b) == kLogHeaderMagic ? be32(b + 4) : be32(b);
  }

 private:
  const BlockDevice& device_;
  uint64_t offset_;
  uint64_t bbs_;
};

}  // namespace

JournalReport inspect_log(const BlockDevice& device, const Superblock& sb) {
  JournalReport report;
  if (sb.log_start == 0) {
    report.state = "unsupported";
    report.note = "external XFS log device is not part of the backup: view as stored";
    return report;
  }
  const uint64_t agno = sb.log_start >> sb.agblklog;
  const uint64_t agbno = sb.log_start & ((uint64_t{1} << sb.agblklog) - 1);
  const uint64_t first_block = agno * sb.agblocks + agbno;
  if (agno >= sb.agcount || agbno >= sb.agblocks || first_block + sb.log_blocks > sb.dblocks) {
    report.state = "unknown";
    report.note = "XFS log lies outside the filesystem";
    return report;
  }
  LogReader log(device, first_block * sb.block_size, uint64_t{sb.log_blocks} * sb.block_size / kBB);
  const uint64_t n = log.size();

  const uint32_t first_cycle = log.cycle(0);
  if (first_cycle == 0) {  // never written since mkfs zeroed it
    report.state = "clean";
    return report;
  }
  const uint32_t last_cycle = log.cycle(n - 1);
  // The head: blocks before it carry first_cycle, blocks from it on carry
  // the previous cycle (or 0 where never written). Equal ends: the head sits
  // at the wrap point.
  uint64_t head = n;
  if (last_cycle != first_cycle) {
    uint64_t lo = 0, hi = n - 1;  // cycle(lo) == first_cycle, cycle(hi) != first_cycle
    while (hi - lo > 1) {
      const uint64_t mid = lo + (hi - lo) / 2;
      (log.cycle(mid) == first_cycle ? lo : hi) = mid;
    }
    head = hi;
  }
  const uint32_t head_cycle = first_cycle;
  // The last record header before the head (wrapping to the end of the log).
  std::vector<unsigned char> bb(kBB);
  const uint64_t window = std::min(n, kMaxRecordBBs);
  for (uint64_t back = 1; back <= window; ++back) {
    const uint64_t at = (head + n - back) % n;
    log.read(at, bb.data());
    if (be32(bb.data()) != kLogHeaderMagic) continue;
    const uint32_t cycle = be32(bb.data() + 4);
    // Before the wrap point a record is from the head's cycle; past it (the
    // end of the log) from the one before.
    if (cycle != (at < head ? head_cycle : head_cycle - 1) && !(head == n && cycle == head_cycle)) continue;
    const uint32_t version = be32(bb.data() + 8);
    const uint32_t num_ops = be32(bb.data() + 40);
    const uint64_t h_size = be32(bb.data() + 320);
    uint64_t header_bbs = 1;
    if (version == 2 && h_size > kHeaderCycleSize) header_bbs = (h_size + kHeaderCycleSize - 1) / kHeaderCycleSize;
    if (header_bbs > 8) break;  // not a sane record header: give up below
    std::vector<unsigned char> data(kBB);
    log.read(at + header_bbs, data.data());
    const bool unmount = num_ops == 1 && (data[9] & kUnmountTrans) != 0;
    report.state = unmount ? "clean" : "skipped";
    if (!unmount) report.note = "XFS log not replayed: view as of the last checkpoint";
    return report;
  }
  report.state = "unknown";
  report.note = "no XFS log record found before the log head";
  return report;
}

}  // namespace sendense::xfs
