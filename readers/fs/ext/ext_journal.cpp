#include "readers/fs/ext/ext_journal.h"

extern "C" {  // com_err.h has no C++ guards
#include <et/com_err.h>
}
#include <ext2fs/ext2fs.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>

#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/fs/ext/block_device_io_manager.h"
#include "readers/fs/ext/jbd2_replay.h"
#include "readers/fs/ext/journal_overlay.h"

namespace sendense::ext {

namespace {

// Superblock fields (e2fsprogs lib/ext2fs/ext2_fs.h), little-endian.
constexpr size_t kCompatOffset = 92;
constexpr size_t kIncompatOffset = 96;
constexpr size_t kJournalUuidOffset = 208;
constexpr size_t kJournalInumOffset = 224;
constexpr size_t kJournalDevOffset = 228;
constexpr size_t kLastOrphanOffset = 232;
constexpr uint32_t kCompatHasJournal = 0x4;
constexpr uint32_t kIncompatRecover = 0x4;
// mke2fs makes journals of at most 10,240,000 blocks (ext4's default is at
// most 1 GiB); the replay itself stops at kMaxJournalReplayEntries.
constexpr uint64_t kMaxJournalBlocks = 10'240'000;

uint32_t le32(const unsigned char* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

struct Ext2fsCloser {
  void operator()(ext2_filsys fs) const {
    if (fs != nullptr) ext2fs_close_free(&fs);
  }
};

std::string ext2_message(errcode_t err) {
  static std::once_flag table;
  std::call_once(table, [] { initialize_ext2_error_table(); });  // idempotent: it checks its list
  return error_message(err);
}

// Forwards reads to the volume and remembers that one failed: the journal
// code turns damaged journals into "skipped", but a device that failed to
// read (truncated image, I/O error) must fail the open and be retried.
class ReadFailureWatch final : public BlockDevice {
 public:
  explicit ReadFailureWatch(BlockDevicePtr volume)
      : volume_(std::move(volume)), failed_(std::make_shared<std::atomic<bool>>(false)) {}
  uint64_t size() const override { return volume_->size(); }
  std::string describe() const override { return volume_->describe(); }
  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    try {
      volume_->read_at(offset, buf);
    } catch (const std::exception& e) {
      {
        std::lock_guard lock(mutex_);
        if (first_error_.empty()) first_error_ = e.what();
      }
      failed_->store(true);
      throw;
    }
  }
  bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const override {
    return volume_->map(offset, length, out);
  }
  std::shared_ptr<const std::atomic<bool>> failed() const { return failed_; }
  // The first failed read's message (libext2fs keeps only an errno of it).
  std::string first_error() const {
    std::lock_guard lock(mutex_);
    return first_error_;
  }

 private:
  BlockDevicePtr volume_;
  std::shared_ptr<std::atomic<bool>> failed_;
  mutable std::mutex mutex_;
  mutable std::string first_error_;
};

// The journal inode's blocks as stored (the journal inode is never itself
// journaled while mounted, so the on-disk map is the one the kernel uses).
JournalLayout map_journal_inode(const BlockDevicePtr& volume, uint32_t journal_ino, const std::string& name) {
  DeviceRegistration registration(volume);
  ext2_filsys raw = nullptr;
  const int flags = EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP | EXT2_FLAG_IGNORE_CSUM_ERRORS;
  errcode_t err = ext2fs_open2(registration.name().c_str(), nullptr, flags, 0, 0, block_device_io_manager(), &raw);
  if (err != 0) {
    if (raw != nullptr) ext2fs_free(raw);
    throw Error(EIO, "cannot open the filesystem to find its journal: " + ext2_message(err), name);
  }
  std::unique_ptr<struct_ext2_filsys, Ext2fsCloser> fs(raw);
  JournalLayout layout;
  layout.block_size = fs->blocksize;
  layout.fs_blocks = ext2fs_blocks_count(fs->super);
  if (layout.fs_blocks > volume->size() / layout.block_size)
    throw Error(EIO, "filesystem does not fit its device", name);
  if (journal_ino == 0 || journal_ino > fs->super->s_inodes_count)
    throw Error(EIO, "journal inode " + std::to_string(journal_ino) + " does not exist", name);
  ext2_inode inode{};
  err = ext2fs_read_inode(fs.get(), journal_ino, &inode);
  if (err != 0) throw Error(EIO, "cannot read the journal inode: " + ext2_message(err), name);
  const uint64_t size = EXT2_I_SIZE(&inode);
  if (size / layout.block_size > kMaxJournalBlocks)
    throw Error(EIO, "journal inode of " + std::to_string(size) + " bytes is larger than the " +
                         std::to_string(kMaxJournalBlocks) + " blocks a jbd2 journal can hold", name);
  layout.journal_blocks = std::min<uint64_t>(size / layout.block_size, layout.fs_blocks);

  struct Ctx {
    JournalLayout* layout;
    std::exception_ptr error;
  } ctx{&layout, nullptr};
  auto cb = [](ext2_filsys, blk64_t* blocknr, e2_blkcnt_t blockcnt, blk64_t, int, void* data) -> int {
    auto* c = static_cast<Ctx*>(data);
    if (blockcnt < 0) return 0;
    const auto logical = static_cast<uint64_t>(blockcnt);
    if (logical >= c->layout->journal_blocks) return BLOCK_ABORT;
    try {
      if (*blocknr == 0 || *blocknr >= c->layout->fs_blocks)
        throw Error(EIO, "journal block " + std::to_string(logical) + " maps to block " + std::to_string(*blocknr) +
                             " outside the filesystem");
      auto& runs = c->layout->runs;
      if (!runs.empty() && logical <= runs.back().logical + runs.back().length - 1)
        throw Error(EIO, "journal block map is not in order");
      if (!runs.empty() && runs.back().logical + runs.back().length == logical &&
          runs.back().physical + runs.back().length == *blocknr)
        ++runs.back().length;
      else
        runs.push_back(JournalRun{logical, *blocknr, 1});
    } catch (...) {
      c->error = std::current_exception();
      return BLOCK_ABORT;
    }
    return 0;
  };
  err = ext2fs_block_iterate3(fs.get(), journal_ino, BLOCK_FLAG_READ_ONLY | BLOCK_FLAG_DATA_ONLY, nullptr, cb, &ctx);
  if (ctx.error) {
    try {
      std::rethrow_exception(ctx.error);
    } catch (const Error& e) {
      rethrow_with_context(e, name);
    }
  }
  if (err != 0) throw Error(EIO, "cannot map the journal inode: " + ext2_message(err), name);
  // Holes in the journal inode: s_maxlen is checked against the mapped prefix.
  uint64_t mapped = 0;
  for (const JournalRun& r : layout.runs) {
    if (r.logical != mapped) break;
    mapped += r.length;
  }
  layout.journal_blocks = std::min(layout.journal_blocks, mapped);
  return layout;
}

// e2fsck and the kernel finish the deletions and truncations on the orphan
// list after a replay; we show them as stored (see ext_journal.h).
std::string orphan_note(const BlockDevice& replayed) {
  unsigned char sb[1024];
  replayed.read_at(1024, std::as_writable_bytes(std::span(sb)));
  const uint32_t last_orphan = le32(sb + kLastOrphanOffset);
  if (last_orphan == 0) return {};
  return "orphan list (from inode " + std::to_string(last_orphan) +
         ") not processed: files deleted or truncated while open are shown as stored";
}

std::string uuid_text(const unsigned char* u) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
  return buf;
}

void log_report(const std::string& name, const JournalReport& r, const std::string& features, uint64_t revoked,
                int64_t ms) {
  const log::Level level = r.state == "replayed" || r.state == "clean" ? log::Level::info : log::Level::warn;
  log::write(level, "journal",
             {{"volume", name},
              {"state", r.state},
              {"transactions", std::to_string(r.transactions)},
              {"blocks", std::to_string(r.blocks)},
              {"revoked", std::to_string(revoked)},
              {"features", features.empty() ? "-" : features},
              {"ms", std::to_string(ms)},
              {"note", r.note.empty() ? "-" : r.note}});
}

}  // namespace

Jbd2Replay replay_ext_journal(const BlockDevicePtr& volume, const std::string& name) {
  unsigned char sb[1024];
  volume->read_at(1024, std::as_writable_bytes(std::span(sb)));
  if (!(le32(sb + kCompatOffset) & kCompatHasJournal)) throw Error(EIO, "no journal", name);
  const uint32_t journal_ino = le32(sb + kJournalInumOffset);
  if (journal_ino == 0) throw Error(EIO, "external journal device", name);
  const JournalLayout layout = map_journal_inode(volume, journal_ino, name);
  return replay_jbd2(*volume, layout, name);
}

JournaledDevice open_ext_journal(BlockDevicePtr volume, const std::string& name, bool replay) {
  JournaledDevice out{volume, {}, nullptr};
  unsigned char sb[1024];
  volume->read_at(1024, std::as_writable_bytes(std::span(sb)));
  if (!(le32(sb + kCompatOffset) & kCompatHasJournal)) return out;  // state "none"
  if (!(le32(sb + kIncompatOffset) & kIncompatRecover)) {
    out.report.state = "clean";
    return out;
  }
  const auto started = std::chrono::steady_clock::now();
  const uint32_t journal_ino = le32(sb + kJournalInumOffset);
  std::string features;
  uint64_t revoked = 0;
  if (journal_ino == 0) {
    out.report.state = "unsupported";
    char dev[16];
    std::snprintf(dev, sizeof dev, "%x", le32(sb + kJournalDevOffset));
    out.report.note = "external journal device (uuid " + uuid_text(sb + kJournalUuidOffset) + ", dev 0x" + dev +
                      ") is not in the backup: not replayed, shown as stored (last checkpoint)";
  } else if (!replay) {
    out.report.state = "skipped";
    out.report.note = "needs recovery; not replayed (--no-replay): shown as stored (last checkpoint)";
  } else {
    const auto watched = std::make_shared<ReadFailureWatch>(volume);
    out.read_failed = watched->failed();
    try {
      const JournalLayout layout = map_journal_inode(watched, journal_ino, name);
      Jbd2Replay r = replay_jbd2(*watched, layout, name);
      features = r.features;
      revoked = r.revoked;
      std::string note;
      auto add = [&](const std::string& s) {
        if (s.empty()) return;
        if (!note.empty()) note += "; ";
        note += s;
      };
      if (!r.needs_replay) {
        out.report.state = "clean";
        add("needs_recovery set but the journal is empty");
      } else {
        out.report.state = "replayed";
        out.report.transactions = r.transactions;
        out.report.blocks = r.copies.size();
        add("replayed in memory");
        if (!r.stop_reason.empty()) add("log ends early: " + r.stop_reason);
        if (r.revoked > 0) add(std::to_string(r.revoked) + " journal copies cancelled by revoke records");
        if (r.bad_block_checksums > 0)
          add(std::to_string(r.bad_block_checksums) + " journal blocks failed their checksum and were not applied");
        const bool any = !r.copies.empty();
        if (any) out.device = make_journal_overlay(watched, layout.block_size, std::move(r.copies));
        add(orphan_note(any ? *out.device : *watched));
      }
      add(r.fast_commit);
      out.report.note = note;
    } catch (const Error& e) {
      if (*out.read_failed)
        throw Error(EIO, "cannot read the volume to replay its journal (" + e.message() +
                             "): " + watched->first_error(),
                    name);
      out.device = volume;
      out.report = JournalReport{};
      out.report.state = "skipped";
      out.report.note = std::string("journal not replayed: ") + e.what() + "; shown as stored (last checkpoint)";
    }
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  log_report(name, out.report, features, revoked, ms);
  return out;
}

}  // namespace sendense::ext
