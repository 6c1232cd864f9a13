// Replays a jbd2 journal (ext3/ext4) in memory, the way the kernel's
// recovery and e2fsck do, without writing anything: the result says, for
// every filesystem block the committed transactions rewrite, where its
// newest copy lies in the journal. Nothing is copied: the map holds offsets.
//
// Rules followed (e2fsprogs e2fsck/recovery.c, kernel fs/jbd2/recovery.c):
// - the log starts at s_start with sequence s_sequence and runs while each
//   block carries the jbd2 magic and the expected sequence; it wraps from
//   the end of the log area (s_maxlen, less a fast-commit area) to s_first;
// - descriptor blocks list tags (32/64-bit block numbers; v2/v3 checksum
//   layouts; SAME_UUID, LAST_TAG, ESCAPE: the journal copy's first 4 bytes
//   were zeroed and are the jbd2 magic);
// - revoke records of committed transactions cancel copies of the block in
//   transactions up to and including the revoking one;
// - a transaction without a commit block, or whose descriptor, revoke or
//   commit checksum fails, ends the replay: it and everything after it are
//   not applied; a data block failing its tag checksum is not applied.
// Damaged structures (a tag naming a block past the filesystem, a revoke
// record count past its block) also end the replay there, with the reason.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "readers/block/block_device.h"

namespace sendense::ext {

// Where the journal lives: journal block j is filesystem block
// physical + (j - logical) of the run holding it.
struct JournalRun {
  uint64_t logical = 0;
  uint64_t physical = 0;
  uint64_t length = 0;
};

struct JournalLayout {
  uint64_t block_size = 0;       // filesystem block size (the journal's must match)
  uint64_t fs_blocks = 0;        // blocks of the filesystem: tags must name one below this
  uint64_t journal_blocks = 0;   // blocks mapped by the journal inode
  std::vector<JournalRun> runs;  // sorted by logical, inside the device
};

// The replay's cap, in entries: every log block it walks and every revoke
// record it reads. Tags, the map and the reads grow with them (at most 16
// bytes of map and ~40 bytes while replaying per entry): 1,048,576 entries
// keep the map of a volume at 16 MiB and the replay at about 40 MiB, within the
// 64 MiB a backup gets for caches and maps. Every journal mke2fs makes by
// default (at most 1 GiB: 262,144 blocks of 4 KiB, 1,048,576 of 1 KiB) fits
// whole; a longer log (a larger -J size, or a guest writing one) is not
// replayed: replay_jbd2 throws and the volume is shown as stored.
inline constexpr uint64_t kMaxJournalReplayEntries = uint64_t{1} << 20;

// The newest committed copy of one filesystem block (16 bytes: a map entry).
struct BlockCopy {
  uint64_t fs_block = 0;
  uint64_t device_offset : 63 = 0;  // byte offset of the journal copy in the device
  bool escaped : 1 = false;         // restore the jbd2 magic into its first 4 bytes
};
static_assert(sizeof(BlockCopy) == 16);

struct Jbd2Replay {
  bool needs_replay = false;          // s_start != 0
  uint64_t transactions = 0;          // committed transactions applied
  std::vector<BlockCopy> copies;      // sorted by fs_block, one per block
  bool wrapped = false;                // the log runs past the end of the log area to s_first
  uint64_t revoked = 0;               // tagged copies cancelled by a revoke record
  uint64_t bad_block_checksums = 0;   // data blocks skipped: tag checksum mismatch
  std::string stop_reason;            // why the log ended early ("" = normal end)
  std::string fast_commit;            // "" or a note on a non-empty fast-commit area
  std::string features;               // "64bit,csum_v3,..." for the log line
};

// Reads the journal of `layout` from `device`. Throws Error(EIO) naming
// `name` when the journal superblock is unusable (bad magic, block size,
// s_maxlen/s_first/s_start out of range, unknown incompat features,
// superblock checksum) or the log holds more than `max_entries` entries
// (see kMaxJournalReplayEntries); damage inside the log ends the replay
// instead (stop_reason). Bounded: at most one pass over the log area,
// memory and reads proportional to the entries walked.
Jbd2Replay replay_jbd2(const BlockDevice& device, const JournalLayout& layout, const std::string& name,
                       uint64_t max_entries = kMaxJournalReplayEntries);

}  // namespace sendense::ext
