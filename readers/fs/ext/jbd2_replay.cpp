// jbd2 recovery in memory (see jbd2_replay.h). On-disk layout (big-endian):
// e2fsprogs lib/ext2fs/kernel-jbd.h, the kernel's include/linux/jbd2.h.
#include "readers/fs/ext/jbd2_replay.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <optional>

#include "readers/common/crc32.h"
#include "readers/common/error.h"

namespace sendense::ext {

namespace {

constexpr uint32_t kMagic = 0xC03B3998u;

// Block types (header h_blocktype).
constexpr uint32_t kDescriptorBlock = 1;
constexpr uint32_t kCommitBlock = 2;
constexpr uint32_t kSuperblockV1 = 3;
constexpr uint32_t kSuperblockV2 = 4;
constexpr uint32_t kRevokeBlock = 5;

// Feature bits.
constexpr uint32_t kCompatChecksum = 0x1;     // v1: crc32_be of the transaction in the commit block
constexpr uint32_t kIncompatRevoke = 0x1;
constexpr uint32_t kIncompat64Bit = 0x2;
constexpr uint32_t kIncompatAsyncCommit = 0x4;
constexpr uint32_t kIncompatCsumV2 = 0x8;
constexpr uint32_t kIncompatCsumV3 = 0x10;
constexpr uint32_t kIncompatFastCommit = 0x20;
constexpr uint32_t kKnownIncompat =
    kIncompatRevoke | kIncompat64Bit | kIncompatAsyncCommit | kIncompatCsumV2 | kIncompatCsumV3 | kIncompatFastCommit;

// Tag flags.
constexpr uint32_t kFlagEscape = 0x1;
constexpr uint32_t kFlagSameUuid = 0x2;
constexpr uint32_t kFlagLastTag = 0x8;

constexpr uint8_t kChecksumCrc32 = 1;   // commit h_chksum_type for the v1 checksum
constexpr uint8_t kChecksumCrc32c = 4;  // s_checksum_type for v2/v3
constexpr uint32_t kDefaultFastCommitBlocks = 256;
constexpr uint32_t kMinJournalBlocks = 1024;  // mke2fs/the kernel refuse smaller journals

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
uint32_t be16(const unsigned char* p) { return (uint32_t{p[0]} << 8) | p[1]; }

// One tagged block of a transaction, before revoke records are applied.
// 16 bytes: the replay holds one per tag of the walked log.
struct Tag {
  uint64_t fs_block : 63;
  uint64_t escaped : 1;
  uint32_t journal_block;  // s_maxlen is a 32-bit field
  uint32_t checksum;       // v2: 16 bits, v3: 32 bits
};
static_assert(sizeof(Tag) == 16);

// A committed transaction that tags or revokes something; its tags start at
// first_tag of Log::tags and run to the next transaction's.
struct Transaction {
  uint32_t sequence = 0;
  uint32_t first_tag = 0;
};

// A revoke block of a committed transaction. Its records are read again
// after the scan and only those naming a tagged block are kept: a log full
// of revoke records cannot make a table grow past the number of tags.
struct RevokeBlock {
  uint32_t journal_block;
  uint32_t sequence;
};

struct Log {
  std::vector<Tag> tags;                  // of committed transactions, in log order
  std::vector<Transaction> transactions;  // committed, with tags or revoke records
  std::vector<RevokeBlock> revokes;       // of committed transactions
  uint64_t committed = 0;                 // committed transactions, empty ones included
};

class Replayer {
 public:
  Replayer(const BlockDevice& device, const JournalLayout& layout, const std::string& name, uint64_t max_entries)
      : device_(device),
        layout_(layout),
        name_(name + " journal"),
        bs_(layout.block_size),
        max_entries_(max_entries),
        block_(bs_),
        data_(bs_) {}

  Jbd2Replay run() {
    read_superblock();
    if (!result_.needs_replay) return std::move(result_);
    const Log log = scan();
    apply(log);
    return std::move(result_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw Error(EIO, what, name_); }

  // Byte offset of journal block `j` in the device.
  uint64_t offset_of(uint64_t j) const {
    auto it = std::upper_bound(layout_.runs.begin(), layout_.runs.end(), j,
                               [](uint64_t b, const JournalRun& r) { return b < r.logical; });
    if (it == layout_.runs.begin()) fail("journal block " + std::to_string(j) + " is not mapped");
    --it;
    if (j >= it->logical + it->length) fail("journal block " + std::to_string(j) + " is not mapped");
    return (it->physical + (j - it->logical)) * bs_;
  }

  void read_block(uint64_t j, std::vector<unsigned char>& out) const {
    device_.read_at(offset_of(j), std::as_writable_bytes(std::span(out)));
  }

  // The block after `j` in the circular log.
  uint64_t next(uint64_t j) {
    if (j + 1 < last_) return j + 1;
    result_.wrapped = true;
    return first_;
  }

  bool has_incompat(uint32_t bit) const { return (incompat_ & bit) != 0; }
  bool csum_v2v3() const { return has_incompat(kIncompatCsumV2) || has_incompat(kIncompatCsumV3); }

  void read_superblock() {
    if (bs_ < 1024 || bs_ > 65536 || (bs_ & (bs_ - 1)) != 0) fail("block size " + std::to_string(bs_));
    if (layout_.journal_blocks < 2) fail("journal of " + std::to_string(layout_.journal_blocks) + " blocks");
    read_block(0, block_);
    const unsigned char* sb = block_.data();
    if (be32(sb) != kMagic) fail("bad journal superblock magic");
    const uint32_t type = be32(sb + 4);
    if (type != kSuperblockV1 && type != kSuperblockV2) fail("journal superblock of type " + std::to_string(type));
    if (be32(sb + 12) != bs_)
      fail("journal block size " + std::to_string(be32(sb + 12)) + " is not the filesystem's " + std::to_string(bs_));
    const uint64_t maxlen = be32(sb + 16);
    const uint64_t first = be32(sb + 20);
    sequence_ = be32(sb + 24);
    const uint64_t start = be32(sb + 28);
    if (maxlen > layout_.journal_blocks)
      fail("s_maxlen " + std::to_string(maxlen) + " is past the journal inode's " +
           std::to_string(layout_.journal_blocks) + " blocks");
    if (maxlen < kMinJournalBlocks) fail("s_maxlen " + std::to_string(maxlen) + " is below " +
                                         std::to_string(kMinJournalBlocks) + " blocks");
    if (first == 0 || first >= maxlen) fail("s_first " + std::to_string(first) + " outside the journal");
    if (type == kSuperblockV2) {
      compat_ = be32(sb + 0x24);
      incompat_ = be32(sb + 0x28);
    }
    if (incompat_ & ~kKnownIncompat) fail("unknown journal features 0x" + hex(incompat_ & ~kKnownIncompat));
    if (has_incompat(kIncompatCsumV2) && has_incompat(kIncompatCsumV3)) fail("both checksum v2 and v3 set");
    if (csum_v2v3()) {
      if (sb[0x50] != kChecksumCrc32c) fail("journal checksum type " + std::to_string(sb[0x50]));
      std::vector<unsigned char> copy(block_.begin(), block_.begin() + 1024);
      std::memset(copy.data() + 0xFC, 0, 4);
      if (crc32c(~0u, copy.data(), copy.size()) != be32(sb + 0xFC)) fail("journal superblock checksum mismatch");
      seed_ = crc32c(~0u, sb + 0x30, 16);  // s_uuid
    }
    tag_bytes_ = has_incompat(kIncompatCsumV3) ? 16
                 : (has_incompat(kIncompatCsumV2) ? 14 : 12) - (has_incompat(kIncompat64Bit) ? 0 : 4);
    first_ = first;
    last_ = maxlen;
    if (has_incompat(kIncompatFastCommit)) {
      const uint64_t fc = be32(sb + 0x54) != 0 ? be32(sb + 0x54) : kDefaultFastCommitBlocks;
      if (fc + kMinJournalBlocks > maxlen) fail("fast-commit area of " + std::to_string(fc) + " blocks");
      // As the kernel lays it out: the log ends at maxlen - fc (exclusive)
      // and the fast-commit blocks start one block later.
      last_ = maxlen - fc;
      note_fast_commit(last_ + 1, maxlen);
    }
    if (first_ >= last_) fail("s_first " + std::to_string(first) + " past the end of the log");
    result_.features = features();
    if (start == 0) return;  // clean: nothing to replay
    if (start < first_ || start >= last_) fail("s_start " + std::to_string(start) + " outside the log");
    start_ = start;
    result_.needs_replay = true;
  }

  // The fast-commit area follows the log; we do not replay it (it would
  // need ext4's own fast-commit tags), but say when it holds something.
  void note_fast_commit(uint64_t from, uint64_t to) {
    if (from >= to) return;
    std::vector<unsigned char> b(bs_);
    read_block(from, b);
    if (std::any_of(b.begin(), b.end(), [](unsigned char c) { return c != 0; }))
      result_.fast_commit = "fast-commit area of " + std::to_string(to - from) +
                            " blocks is not empty and was not replayed (changes after the last full commit may be missing)";
  }

  static std::string hex(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%x", v);
    return buf;
  }

  std::string features() const {
    std::string s = incompat_ & kIncompat64Bit ? "64bit" : "32bit";
    if (has_incompat(kIncompatCsumV3)) s += ",csum_v3";
    else if (has_incompat(kIncompatCsumV2)) s += ",csum_v2";
    else if (compat_ & kCompatChecksum) s += ",csum_v1";
    if (has_incompat(kIncompatAsyncCommit)) s += ",async_commit";
    if (has_incompat(kIncompatRevoke)) s += ",revoke";
    if (has_incompat(kIncompatFastCommit)) s += ",fast_commit";
    return s;
  }

  // Descriptor and revoke blocks end with a 4-byte checksum of the block.
  bool tail_checksum_ok(const std::vector<unsigned char>& b) const {
    if (!csum_v2v3()) return true;
    std::vector<unsigned char> copy(b);
    std::memset(copy.data() + bs_ - 4, 0, 4);
    return crc32c(seed_, copy.data(), copy.size()) == be32(b.data() + bs_ - 4);
  }

  bool commit_checksum_ok(const std::vector<unsigned char>& b) const {
    std::vector<unsigned char> copy(b);
    std::memset(copy.data() + 16, 0, 4);  // h_chksum[0]
    return crc32c(seed_, copy.data(), copy.size()) == be32(b.data() + 16);
  }

  void stop(const std::string& why) {
    if (result_.stop_reason.empty()) result_.stop_reason = why;
  }

  // Every log block walked and every revoke record read is an entry: the
  // replay's memory (tags, map) and reads grow with them, so past the cap
  // nothing is replayed (a guest writes such a log cheaply: tagged data
  // blocks need not be written).
  void count_entries(uint64_t n) {
    entries_ += n;
    if (entries_ > max_entries_)
      fail("log holds more than the replay's cap of " + std::to_string(max_entries_) +
           " blocks and revoke records (memory limit)");
  }

  // Walks the log once: the committed transactions. The walk is bounded by
  // the log's size, so a log whose sequence numbers keep matching around the
  // ring (crafted) still ends, and by the entry cap.
  Log scan() {
    Log log;
    const uint64_t capacity = last_ - first_;
    uint64_t walked = 0;
    uint64_t pos = start_;
    uint32_t sequence = sequence_;
    size_t first_tag = 0;     // of the open transaction in log.tags
    size_t first_revoke = 0;  // of the open transaction in log.revokes
    bool open = false;  // a descriptor or revoke block of `sequence` was seen
    uint32_t crc_v1 = ~0u;
    bool v1_seen = false;
    auto advance = [&]() -> bool {
      pos = next(pos);
      count_entries(1);
      if (++walked > capacity) {
        stop("log runs past its own start (wraps onto itself)");
        return false;
      }
      return true;
    };
    auto incomplete = [&](const std::string& why) {
      if (open) stop("transaction " + std::to_string(sequence) + " " + why + ": not applied");
    };
    count_entries(1);
    while (true) {
      read_block(pos, block_);
      const unsigned char* h = block_.data();
      if (be32(h) != kMagic || be32(h + 8) != sequence) {
        incomplete("has no commit block");
        break;
      }
      const uint32_t type = be32(h + 4);
      if (type == kDescriptorBlock) {
        if (!tail_checksum_ok(block_)) {
          stop("descriptor block of transaction " + std::to_string(sequence) + " fails its checksum: not applied");
          break;
        }
        open = true;
        if (compat_ & kCompatChecksum) crc_v1 = crc32_be(crc_v1, block_.data(), bs_);
        if (!read_tags(log.tags, sequence, pos, walked, capacity, crc_v1)) break;
        if (!advance()) break;
        continue;
      }
      if (type == kRevokeBlock) {
        if (!tail_checksum_ok(block_)) {
          stop("revoke block of transaction " + std::to_string(sequence) + " fails its checksum: not applied");
          break;
        }
        open = true;
        if (!check_revokes(sequence)) break;
        log.revokes.push_back(RevokeBlock{static_cast<uint32_t>(pos), sequence});
        if (!advance()) break;
        continue;
      }
      if (type == kCommitBlock) {
        if (!commit_ok(sequence, crc_v1, v1_seen)) break;
        crc_v1 = ~0u;
        ++log.committed;
        if (log.tags.size() > first_tag || log.revokes.size() > first_revoke)
          log.transactions.push_back(Transaction{sequence, static_cast<uint32_t>(first_tag)});
        first_tag = log.tags.size();
        first_revoke = log.revokes.size();
        ++sequence;
        open = false;
        if (!advance()) break;
        continue;
      }
      // Any other block type (a superblock copy, ...) ends the log, as in the kernel.
      incomplete("has no commit block");
      break;
    }
    // The open transaction's tags and revoke blocks are not applied.
    log.tags.resize(first_tag);
    log.revokes.resize(first_revoke);
    return log;
  }

  bool commit_ok(uint32_t sequence, uint32_t crc_v1, bool& v1_seen) {
    const unsigned char* c = block_.data();
    if (csum_v2v3()) {
      if (!commit_checksum_ok(block_)) {
        stop("commit block of transaction " + std::to_string(sequence) + " fails its checksum: not applied");
        return false;
      }
    } else if (compat_ & kCompatChecksum) {
      const uint8_t type = c[12];
      const uint8_t size = c[13];
      const uint32_t found = be32(c + 16);
      if (type == kChecksumCrc32 && size == 4 && found == crc_v1) {
        v1_seen = true;
      } else if (!(type == 0 && size == 0 && found == 0 && !v1_seen)) {
        // (A commit without any checksum before the first one with: written
        // by a kernel that did not checksum yet; the kernel accepts it.)
        stop("commit block of transaction " + std::to_string(sequence) + " fails its checksum: not applied");
        return false;
      }
    }
    return true;
  }

  // Reads the tags of the descriptor in block_ and steps `pos` over the data
  // blocks that follow it. False when the log ends inside.
  bool read_tags(std::vector<Tag>& tags, uint32_t sequence, uint64_t& pos, uint64_t& walked, uint64_t capacity,
                 uint32_t& crc_v1) {
    const std::vector<unsigned char> desc = block_;  // block_ is reused for the v1 checksum reads
    const size_t limit = bs_ - (csum_v2v3() ? 4 : 0);
    size_t off = 12;
    bool last = false;
    while (!last && off + tag_bytes_ <= limit) {
      const unsigned char* tag = desc.data() + off;
      uint64_t block = be32(tag);
      uint32_t flags;
      uint32_t checksum = 0;
      if (has_incompat(kIncompatCsumV3)) {
        flags = be32(tag + 4);
        if (has_incompat(kIncompat64Bit)) block |= uint64_t{be32(tag + 8)} << 32;
        checksum = be32(tag + 12);
      } else {
        checksum = be16(tag + 4);
        flags = be16(tag + 6);
        if (has_incompat(kIncompat64Bit)) block |= uint64_t{be32(tag + 8)} << 32;
      }
      off += tag_bytes_;
      if (!(flags & kFlagSameUuid)) off += 16;
      last = (flags & kFlagLastTag) != 0;
      // The data block follows the descriptor (or the previous data block).
      pos = next(pos);
      count_entries(1);
      if (++walked > capacity) {
        stop("log runs past its own start (wraps onto itself)");
        return false;
      }
      if (block >= layout_.fs_blocks) {
        stop("transaction " + std::to_string(sequence) + " names block " + std::to_string(block) +
             " past the filesystem's " + std::to_string(layout_.fs_blocks) + ": not applied");
        return false;
      }
      if (compat_ & kCompatChecksum) {
        read_block(pos, data_);
        crc_v1 = crc32_be(crc_v1, data_.data(), bs_);
      }
      tags.push_back(Tag{block, (flags & kFlagEscape) != 0 ? 1u : 0u, static_cast<uint32_t>(pos), checksum});
    }
    return true;
  }

  // Checks the record count of the revoke block in block_.
  bool check_revokes(uint32_t sequence) {
    const uint64_t count = be32(block_.data() + 12);  // bytes used, header included
    const uint64_t limit = bs_ - (csum_v2v3() ? 4 : 0);
    if (count < 16 || count > limit) {
      stop("revoke block of transaction " + std::to_string(sequence) + " claims " + std::to_string(count) +
           " bytes: not applied");
      return false;
    }
    count_entries((count - 16) / (has_incompat(kIncompat64Bit) ? 8 : 4));
    return true;
  }

  // Calls fn(fs block) for each record of the revoke block at journal block `j`
  // (checked by check_revokes during the scan).
  template <typename Fn>
  void for_each_revoke(uint64_t j, Fn&& fn) {
    read_block(j, data_);
    const unsigned char* b = data_.data();
    const uint64_t count = std::min<uint64_t>(be32(b + 12), bs_);
    const size_t record = has_incompat(kIncompat64Bit) ? 8 : 4;
    for (uint64_t off = 16; off + record <= count; off += record) {
      uint64_t block = be32(b + off);
      if (record == 8) block = (block << 32) | be32(b + off + 4);
      fn(block);
    }
  }

  bool data_checksum_ok(const Tag& tag, uint32_t sequence) {
    if (!csum_v2v3()) return true;
    read_block(tag.journal_block, data_);
    unsigned char seq[4] = {static_cast<unsigned char>(sequence >> 24), static_cast<unsigned char>(sequence >> 16),
                            static_cast<unsigned char>(sequence >> 8), static_cast<unsigned char>(sequence)};
    uint32_t crc = crc32c(seed_, seq, 4);
    crc = crc32c(crc, data_.data(), bs_);
    return has_incompat(kIncompatCsumV3) ? crc == tag.checksum : (crc & 0xffff) == tag.checksum;
  }

  // Sorted vectors rather than hash maps: 4 bytes per tag besides the tags
  // themselves, and the map comes out sorted.
  void apply(const Log& log) {
    const std::vector<Tag>& tags = log.tags;
    result_.transactions = log.committed;
    // Tag indexes by (block, log order): each block's copies in a row, oldest first.
    std::vector<uint32_t> order(tags.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return tags[a].fs_block != tags[b].fs_block ? tags[a].fs_block < tags[b].fs_block : a < b;
    });
    auto first_of = [&](uint64_t block) -> std::optional<size_t> {
      auto it = std::lower_bound(order.begin(), order.end(), block,
                                 [&](uint32_t i, uint64_t b) { return tags[i].fs_block < b; });
      if (it == order.end() || tags[*it].fs_block != block) return std::nullopt;
      return static_cast<size_t>(it - order.begin());
    };
    // A revoke in transaction R cancels copies of the block in every
    // transaction up to R (the kernel keeps the newest revoking sequence),
    // kept at the block's first position in `order`.
    std::vector<uint32_t> revoked_by(order.size());
    std::vector<bool> is_revoked(order.size());
    for (const RevokeBlock& r : log.revokes)
      for_each_revoke(r.journal_block, [&](uint64_t block) {
        const std::optional<size_t> at = first_of(block);
        if (!at) return;
        if (!is_revoked[*at] || static_cast<int32_t>(r.sequence - revoked_by[*at]) > 0) {
          is_revoked[*at] = true;
          revoked_by[*at] = r.sequence;
        }
      });
    auto sequence_of = [&](uint32_t tag) {
      auto it = std::upper_bound(log.transactions.begin(), log.transactions.end(), tag,
                                 [](uint32_t i, const Transaction& t) { return i < t.first_tag; });
      return std::prev(it)->sequence;
    };
    size_t blocks = 0;
    for (size_t i = 0; i < order.size(); ++i)
      if (i == 0 || tags[order[i]].fs_block != tags[order[i - 1]].fs_block) ++blocks;
    result_.copies.reserve(blocks);
    for (size_t group = 0; group < order.size();) {
      const uint64_t block = tags[order[group]].fs_block;
      size_t end = group;
      std::optional<uint32_t> newest;
      for (; end < order.size() && tags[order[end]].fs_block == block; ++end) {
        const Tag& tag = tags[order[end]];
        const uint32_t sequence = sequence_of(order[end]);
        if (is_revoked[group] && static_cast<int32_t>(sequence - revoked_by[group]) <= 0) {
          ++result_.revoked;
          continue;
        }
        if (!data_checksum_ok(tag, sequence)) {
          ++result_.bad_block_checksums;
          continue;
        }
        newest = order[end];
      }
      if (newest) {
        const Tag& tag = tags[*newest];
        result_.copies.push_back(BlockCopy{block, offset_of(tag.journal_block), tag.escaped != 0});
      }
      group = end;
    }
  }

  const BlockDevice& device_;
  const JournalLayout& layout_;
  const std::string name_;
  const uint64_t bs_;
  const uint64_t max_entries_;
  uint64_t entries_ = 0;
  std::vector<unsigned char> block_;
  std::vector<unsigned char> data_;
  uint32_t compat_ = 0;
  uint32_t incompat_ = 0;
  uint32_t seed_ = 0;
  size_t tag_bytes_ = 8;
  uint64_t first_ = 1;
  uint64_t last_ = 0;   // end of the log area (exclusive)
  uint64_t start_ = 0;
  uint32_t sequence_ = 0;
  Jbd2Replay result_;
};

}  // namespace

Jbd2Replay replay_jbd2(const BlockDevice& device, const JournalLayout& layout, const std::string& name,
                       uint64_t max_entries) {
  return Replayer(device, layout, name, max_entries).run();
}

}  // namespace sendense::ext
