// Journal replay against crash-consistent images made at test time by the
// real kernel (tests/fixtures/make-journal-fixtures.sh): the tree our reader
// shows after replaying in memory must equal what `e2fsck -fy` makes of a
// copy, the image must not change, and damaged journals must end the replay
// cleanly.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "readers/block/block_device.h"
#include "readers/common/crc32.h"
#include "readers/common/error.h"
#include "readers/fs/ext/ext_filesystem.h"
#include "readers/fs/ext/ext_journal.h"
#include "readers/fs/ext/journal_overlay.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using sendense::Attr;
using sendense::Error;
using sendense::Filesystem;
using sendense::FilesystemPtr;
using sendense::FsOpenOptions;
using sendense::test::run_ok;
using sendense::test::sha256_of;
using sendense::test::shell_quote;
using sendense::test::TempDir;

namespace {

const std::string kFixtures = SENDENSE_JOURNAL_FIXTURES;

#define REQUIRE_FIXTURES()                                                                        \
  do {                                                                                            \
    if (fs::exists(kFixtures + "/SKIPPED"))                                                       \
      SENDENSE_SKIP(sendense::test::read_file(kFixtures + "/SKIPPED"));                           \
    ASSERT_TRUE(fs::exists(kFixtures + "/ext4.raw")) << "run the make_journal_fixtures test first"; \
  } while (0)

std::string image(const std::string& variant) { return kFixtures + "/" + variant + ".raw"; }
std::string reference(const std::string& variant) { return kFixtures + "/" + variant + ".ref.raw"; }

FilesystemPtr open_fs(const std::string& path, bool replay = true) {
  FsOpenOptions o;
  o.replay_journal = replay;
  return sendense::open_ext_filesystem(sendense::open_raw_image(path), "backup-j/disk", o);
}

std::map<std::string, std::string> read_env(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

std::string file_content(Filesystem& f, uint64_t ino, uint64_t size) {
  const uint64_t h = f.open(ino);
  std::string data(size, '\0');
  size_t done = 0;
  while (done < size) {
    const size_t n = f.read(h, done, std::as_writable_bytes(std::span(data)).subspan(done, std::min<size_t>(size - done, 1 << 20)));
    if (n == 0) break;
    done += n;
  }
  f.release(h);
  data.resize(done);
  return data;
}

// Everything one path shows: attributes, content or target, xattrs.
std::string describe(Filesystem& f, const Attr& a) {
  std::string d = "ino=" + std::to_string(a.ino) + " mode=" + std::to_string(a.mode) +
                  " nlink=" + std::to_string(a.nlink) + " uid=" + std::to_string(a.uid) +
                  " gid=" + std::to_string(a.gid) + " size=" + std::to_string(a.size) +
                  " mtime=" + std::to_string(a.mtime.tv_sec) + "." + std::to_string(a.mtime.tv_nsec) +
                  " ctime=" + std::to_string(a.ctime.tv_sec) + "." + std::to_string(a.ctime.tv_nsec);
  if (S_ISREG(a.mode)) d += " sha=" + std::to_string(std::hash<std::string>{}(file_content(f, a.ino, a.size)));
  if (S_ISLNK(a.mode)) d += " target=" + f.readlink(a.ino);
  for (const std::string& x : f.listxattr(a.ino)) d += " xattr:" + x + "=" + f.getxattr(a.ino, x).value_or("?");
  return d;
}

void walk(Filesystem& f, uint64_t dir, const std::string& path, std::map<std::string, std::string>& out) {
  for (const auto& e : f.readdir(dir)) {
    if (e.name == "." || e.name == "..") continue;
    const std::string p = path + "/" + e.name;
    Attr a;
    try {
      a = f.getattr(e.ino);
      out[p] = describe(f, a);
    } catch (const Error& err) {
      // A stored state that needed recovery can be inconsistent (an entry
      // written back before its inode): part of the tree, not a test error.
      out[p] = std::string("error: ") + err.what();
      continue;
    }
    if (S_ISDIR(a.mode) && e.name != "lost+found") walk(f, e.ino, p, out);
  }
}

std::map<std::string, std::string> tree(Filesystem& f) {
  std::map<std::string, std::string> out;
  out["/"] = describe(f, f.getattr(f.root_ino()));
  walk(f, f.root_ino(), "", out);
  return out;
}

std::optional<Attr> lookup_path(Filesystem& f, const std::string& path) {
  uint64_t ino = f.root_ino();
  std::optional<Attr> a = f.getattr(ino);
  for (const auto& part : fs::path(path)) {
    if (part == "/") continue;
    a = f.lookup(ino, part.string());
    if (!a) return std::nullopt;
    ino = a->ino;
  }
  return a;
}

void expect_same_tree(const std::map<std::string, std::string>& got, const std::map<std::string, std::string>& want) {
  for (const auto& [p, d] : want) {
    auto it = got.find(p);
    if (it == got.end()) ADD_FAILURE() << "missing after replay: " << p;
    else EXPECT_EQ(it->second, d) << p;
  }
  for (const auto& [p, d] : got)
    if (!want.count(p)) ADD_FAILURE() << "only after replay: " << p;
}

class CrashConsistent : public ::testing::TestWithParam<std::string> {};

// The replayed tree equals e2fsck's, the image is unchanged.
TEST_P(CrashConsistent, ReplayedTreeEqualsE2fsck) {
  REQUIRE_FIXTURES();
  const std::string variant = GetParam();
  const std::string before = sha256_of(image(variant));
  FilesystemPtr ours = open_fs(image(variant));
  const sendense::JournalReport report = ours->journal();
  EXPECT_EQ(report.state, "replayed") << report.note;
  EXPECT_GT(report.transactions, 0u);
  EXPECT_GT(report.blocks, 0u);
  FilesystemPtr ref = open_fs(reference(variant));
  EXPECT_EQ(ref->journal().state, "clean");  // e2fsck recovered it
  const auto want = tree(*ref);
  EXPECT_GE(want.size(), 4u);
  expect_same_tree(tree(*ours), want);
  EXPECT_EQ(sha256_of(image(variant)), before);
}

// --no-replay: the stored state, which lacks what the journal holds.
TEST_P(CrashConsistent, NoReplayShowsStoredState) {
  REQUIRE_FIXTURES();
  const std::string variant = GetParam();
  FilesystemPtr stored = open_fs(image(variant), false);
  EXPECT_EQ(stored->journal().state, "skipped");
  EXPECT_NE(stored->journal().note.find("--no-replay"), std::string::npos);
  FilesystemPtr ref = open_fs(reference(variant));
  EXPECT_FALSE(tree(*stored) == tree(*ref)) << "the journal of " << variant << " changes nothing";
}

INSTANTIATE_TEST_SUITE_P(Variants, CrashConsistent,
                         ::testing::Values("ext4", "wrap", "revoke", "torn", "ext3", "csum1", "v2", "v1"));

TEST(Journal, KernelChangesAppearOnlyAfterReplay) {
  REQUIRE_FIXTURES();
  for (const std::string variant : {"ext4", "ext3", "csum1", "wrap", "revoke", "torn"}) {
    FilesystemPtr replayed = open_fs(image(variant));
    FilesystemPtr stored = open_fs(image(variant), false);
    // Written by change_tree in the fixture script while mounted; synced.bin
    // was fsync'd (its data is on disk), report.txt may still be delayed
    // allocation (size 0 after a crash, as e2fsck shows it too).
    EXPECT_TRUE(lookup_path(*replayed, "/new/report.txt")) << variant;
    auto synced = lookup_path(*replayed, "/new/sub/synced.bin");
    ASSERT_TRUE(synced) << variant;
    EXPECT_EQ(synced->size, 512u * 1024) << variant;
    EXPECT_FALSE(lookup_path(*replayed, "/docs/delete-me.txt")) << variant;
    // fsync'd last by the fixture script, copied before any write-back.
    if (variant != "torn") {
      EXPECT_TRUE(lookup_path(*replayed, "/last-change.txt")) << variant;
    }
    EXPECT_FALSE(lookup_path(*stored, "/last-change.txt")) << variant;
  }
}

// The fixture deletes a file it keeps open: its inode is on the orphan list
// of the replayed superblock. Not processed, but said; it is in no folder.
TEST(Journal, OrphanListIsReported) {
  REQUIRE_FIXTURES();
  for (const std::string variant : {"ext4", "ext3"}) {
    FilesystemPtr f = open_fs(image(variant));
    EXPECT_NE(f->journal().note.find("orphan list"), std::string::npos) << variant << ": " << f->journal().note;
    EXPECT_FALSE(lookup_path(*f, "/deleted-while-open"));
  }
  EXPECT_EQ(open_fs(image("wrap"))->journal().note.find("orphan"), std::string::npos);
}

TEST(Journal, FeaturesOfEachVariant) {
  REQUIRE_FIXTURES();
  auto replay = [](const std::string& v) {
    return sendense::ext::replay_ext_journal(sendense::open_raw_image(image(v)), v);
  };
  EXPECT_EQ(replay("ext4").features.rfind("64bit,csum_v3", 0), 0u) << replay("ext4").features;
  EXPECT_EQ(replay("ext3").features.rfind("32bit", 0), 0u) << replay("ext3").features;
  EXPECT_EQ(replay("csum1").features.rfind("32bit,csum_v1", 0), 0u) << replay("csum1").features;
  EXPECT_NE(replay("v2").features.find("csum_v2"), std::string::npos) << replay("v2").features;
  EXPECT_NE(replay("v1").features.find("csum_v1"), std::string::npos) << replay("v1").features;
  EXPECT_TRUE(replay("wrap").wrapped);
  EXPECT_FALSE(replay("ext4").wrapped);
  EXPECT_GT(replay("revoke").revoked, 0u);
  for (const std::string v : {"ext4", "wrap", "revoke", "ext3", "csum1", "v2"})
    EXPECT_EQ(replay(v).stop_reason, "") << v;
}

// fsync on a fast_commit filesystem writes the fast-commit area: reported
// in the note, not replayed (the regular log is). e2fsck 1.47.0 fails on
// this image ("Invalid argument while recovering journal"), so there is no
// reference tree to compare with.
TEST(Journal, FastCommitAreaIsReported) {
  REQUIRE_FIXTURES();
  FilesystemPtr f = open_fs(image("fc"));
  EXPECT_EQ(f->journal().state, "replayed");
  EXPECT_NE(f->journal().note.find("fast-commit area"), std::string::npos) << f->journal().note;
  EXPECT_NE(sendense::ext::replay_ext_journal(sendense::open_raw_image(image("fc")), "fc").features.find("fast_commit"),
            std::string::npos);
  EXPECT_TRUE(lookup_path(*f, "/docs"));
  EXPECT_EQ(open_fs(image("ext4"))->journal().note.find("fast-commit"), std::string::npos);
}

// debugfs wrote: transaction 1 replaces data.bin (its first block starts
// with the jbd2 magic, so the journal holds it escaped), transaction 2
// victim.bin's first block, transaction 3 revokes that block. With csum v1
// debugfs counts the revoke block into transaction 3's checksum, the kernel
// and e2fsck do not: there transaction 3 fails its checksum and is not
// applied (e2fsck's reference agrees, see ReplayedTreeEqualsE2fsck/v1).
TEST(Journal, EscapedBlocksAndRevokeFromDebugfs) {
  REQUIRE_FIXTURES();
  for (const std::string variant : {"v1", "v2"}) {
    const bool v2 = variant == "v2";
    FilesystemPtr f = open_fs(image(variant));
    EXPECT_EQ(f->journal().transactions, v2 ? 3u : 2u) << variant;
    auto data = lookup_path(*f, "/data.bin");
    ASSERT_TRUE(data);
    const std::string want = sendense::test::read_file(kFixtures + "/" + variant + ".new-data");
    ASSERT_EQ(want.substr(0, 4), "\xc0\x3b\x39\x98");
    EXPECT_TRUE(file_content(*f, data->ino, data->size) == want) << variant << ": data.bin is not the journal's copy";
    auto victim = lookup_path(*f, "/victim.bin");
    ASSERT_TRUE(victim);
    const std::string victim_now = file_content(*f, victim->ino, victim->size);
    const std::string original = sendense::test::read_file(kFixtures + "/src-" + variant + "/victim.bin");
    const std::string journaled = sendense::test::read_file(kFixtures + "/" + variant + ".new-victim");
    if (v2) {
      EXPECT_TRUE(victim_now == original) << "a revoked block was replayed";
    } else {
      const size_t bs = 1024;  // mkfs.ext4 makes 1 KiB blocks on a 32 MiB image
      EXPECT_TRUE(victim_now.substr(0, bs) == journaled.substr(0, bs)) << "transaction 2 was not replayed";
      EXPECT_TRUE(victim_now.substr(bs) == original.substr(bs));
    }
    const auto replay = sendense::ext::replay_ext_journal(sendense::open_raw_image(image(variant)), variant);
    EXPECT_EQ(replay.revoked, v2 ? 1u : 0u);
    EXPECT_EQ(replay.stop_reason.empty(), v2) << replay.stop_reason;
  }
}

// The commit block of the last transaction was zeroed: it is not applied.
TEST(Journal, TornLastTransactionIsNotApplied) {
  REQUIRE_FIXTURES();
  const auto env = read_env(kFixtures + "/torn.env");
  ASSERT_TRUE(env.count("torn_file"));
  FilesystemPtr f = open_fs(image("torn"));
  EXPECT_FALSE(lookup_path(*f, "/" + env.at("torn_file")));
  EXPECT_TRUE(lookup_path(*f, "/new/report.txt"));  // earlier transactions are
  EXPECT_NE(f->journal().note.find("not applied"), std::string::npos) << f->journal().note;
  FilesystemPtr ref = open_fs(reference("torn"));
  EXPECT_FALSE(lookup_path(*ref, "/" + env.at("torn_file")));
}

// The check values of the CRC catalogue (CRC-32C; CRC-32/MPEG-2 is the
// big-endian CRC-32 seeded with ~0 and not inverted, as jbd2 csum v1 uses it).
TEST(Journal, ChecksumFunctionsMatchTheirCheckValues) {
  const char* text = "123456789";
  EXPECT_EQ(sendense::crc32c(~0u, text, 9) ^ ~0u, 0xE3069283u);
  EXPECT_EQ(sendense::crc32_be(~0u, text, 9), 0x0376E6E7u);
  // Split updates give the same result (the 8-byte and byte paths).
  const std::string long_text(1000, 'x');
  EXPECT_EQ(sendense::crc32c(sendense::crc32c(~0u, long_text.data(), 13), long_text.data() + 13, 987),
            sendense::crc32c(~0u, long_text.data(), 1000));
}

// The overlay over a real file: every byte read through it, at any offset
// and length, is the journal copy's for a replayed block (with the magic
// restored in an escaped one) and the volume's elsewhere.
TEST(Journal, OverlayReadsAnyRange) {
  TempDir dir;
  constexpr uint64_t kBs = 1024, kBlocks = 64;
  std::mt19937 gen(7);
  std::string volume(kBs * kBlocks, '\0');
  for (char& c : volume) c = static_cast<char>(gen());
  sendense::test::write_file(dir / "volume.raw", volume);
  // Blocks 3 (escaped), 4, 10 and 63 replayed from "journal" blocks 40..43.
  std::vector<sendense::ext::BlockCopy> copies = {
      {3, 40 * kBs, true}, {4, 41 * kBs, false}, {10, 42 * kBs, false}, {63, 43 * kBs, true}};
  std::string want = volume;
  for (const auto& c : copies) {
    want.replace(c.fs_block * kBs, kBs, volume.substr(c.device_offset, kBs));
    if (c.escaped) want.replace(c.fs_block * kBs, 4, "\xc0\x3b\x39\x98");
  }
  auto overlay = sendense::ext::make_journal_overlay(sendense::open_raw_image(dir / "volume.raw"), kBs, copies);
  EXPECT_EQ(overlay->size(), volume.size());
  std::uniform_int_distribution<uint64_t> offset(0, volume.size() - 1);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t off = i < 64 ? i * kBs + (i % 5) : offset(gen);  // block starts, escaped bytes 0..3
    const uint64_t len = std::uniform_int_distribution<uint64_t>(1, volume.size() - off)(gen) % (9 * kBs) + 1;
    const uint64_t n = std::min<uint64_t>(len, volume.size() - off);
    std::string got(n, '\0');
    overlay->read_at(off, std::as_writable_bytes(std::span(got)));
    ASSERT_TRUE(got == want.substr(off, n)) << "offset " << off << " length " << n;
    // Its map (what the daemon copies for a worker): the same bytes, or
    // none where the range holds an escaped copy's restored magic.
    bool touches_magic = false;
    for (const auto& c : copies)
      if (c.escaped && off < c.fs_block * kBs + 4 && c.fs_block * kBs < off + n) touches_magic = true;
    std::vector<sendense::Extent> map;
    ASSERT_EQ(overlay->map(off, n, map), !touches_magic) << "offset " << off << " length " << n;
    if (touches_magic) continue;
    std::string copied;
    for (const auto& e : map) copied += volume.substr(e.offset, e.length);  // one file: the volume
    ASSERT_TRUE(copied == want.substr(off, n)) << "map of offset " << off << " length " << n;
  }
  // A copy outside the volume is refused.
  EXPECT_THROW(sendense::ext::make_journal_overlay(sendense::open_raw_image(dir / "volume.raw"), kBs,
                                                  {{1, volume.size() - 10, false}}),
               Error);
}

// A read of the device that fails while the journal is read (the image file
// truncated under an open device, as while a backup is being restored) says
// nothing about the journal: the open fails and is retried, it is not
// remembered as an unreadable journal shown as stored. The device itself
// refuses every read once it saw its file change (image_file.h); the next
// attach opens the file again and replays.
TEST(Journal, DeviceReadErrorFailsTheOpenAndIsNotRemembered) {
  REQUIRE_FIXTURES();
  TempDir dir;
  const std::string copy = dir / "ext4.raw";
  run_ok("cp --sparse=always " + shell_quote(image("ext4")) + " " + shell_quote(copy));
  const sendense::BlockDevicePtr device = sendense::open_raw_image(copy);
  run_ok("truncate -s 8192 " + shell_quote(copy));  // the superblock stays, the journal inode goes
  FsOpenOptions o;
  o.replay_journal = true;
  try {
    FilesystemPtr f = sendense::open_ext_filesystem(device, "backup-j/disk", o);
    ADD_FAILURE() << "opened over a truncated image, journal " << f->journal().state << ": " << f->journal().note;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO);
    EXPECT_NE(std::string(e.what()).find("changed while attached"), std::string::npos) << e.what();
  }
  run_ok("cp --sparse=always " + shell_quote(image("ext4")) + " " + shell_quote(copy));  // same inode, whole again
  EXPECT_THROW(sendense::open_ext_filesystem(device, "backup-j/disk", o), Error);
  FilesystemPtr f = sendense::open_ext_filesystem(sendense::open_raw_image(copy), "backup-j/disk", o);
  EXPECT_EQ(f->journal().state, "replayed") << f->journal().note;
  EXPECT_TRUE(lookup_path(*f, "/last-change.txt"));
}

// ---- damaged journals ------------------------------------------------------

uint32_t be32(const std::string& s, size_t off) {
  return (uint32_t{static_cast<unsigned char>(s[off])} << 24) | (uint32_t{static_cast<unsigned char>(s[off + 1])} << 16) |
         (uint32_t{static_cast<unsigned char>(s[off + 2])} << 8) | static_cast<unsigned char>(s[off + 3]);
}
void put_be32(std::string& s, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[off + i] = static_cast<char>(v >> (24 - 8 * i));
}

// A copy of a fixture whose journal blocks can be rewritten.
class DamagedJournal {
 public:
  explicit DamagedJournal(const std::string& variant) : path_(dir_ / (variant + ".raw")) {
    run_ok("cp --sparse=always " + shell_quote(image(variant)) + " " + shell_quote(path_));
    const std::string out = run_ok("dumpe2fs -h " + shell_quote(path_) + " 2>/dev/null");
    block_size_ = std::stoull(out.substr(out.find("Block size:") + 11));
  }
  const std::string& path() const { return path_; }
  uint64_t block_size() const { return block_size_; }
  uint64_t offset_of(uint64_t journal_block) const {
    return std::stoull(run_ok("debugfs -R 'bmap <8> " + std::to_string(journal_block) + "' " + shell_quote(path_) +
                              " 2>/dev/null")) * block_size_;
  }
  std::string read(uint64_t journal_block) const {
    std::string b(block_size_, '\0');
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset_of(journal_block)));
    in.read(b.data(), static_cast<std::streamsize>(b.size()));
    return b;
  }
  void write(uint64_t journal_block, const std::string& b) const {
    std::fstream out(path_, std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(static_cast<std::streamoff>(offset_of(journal_block)));
    out.write(b.data(), static_cast<std::streamsize>(b.size()));
  }
  // Journal block numbers of the log's header blocks of `type` (logdump).
  std::vector<uint64_t> blocks_of_type(int type) const {
    const std::string out = run_ok("debugfs -R logdump " + shell_quote(path_) + " 2>/dev/null");
    std::vector<uint64_t> found;
    const std::string key = "type " + std::to_string(type) + " (";
    for (size_t pos = out.find(key); pos != std::string::npos; pos = out.find(key, pos + 1)) {
      const size_t at = out.find("at block ", pos);
      found.push_back(std::stoull(out.substr(at + 9)));
    }
    return found;
  }

 private:
  TempDir dir_;
  std::string path_;
  uint64_t block_size_ = 0;
};

// Opening must not crash or hang; the outcome is "skipped" (shown as
// stored) or a replay that ends early, each with the reason in the note.
sendense::JournalReport open_damaged(const DamagedJournal& d) {
  const std::string before = sha256_of(d.path());
  FilesystemPtr f = open_fs(d.path());
  tree(*f);  // the whole tree still reads
  EXPECT_EQ(sha256_of(d.path()), before);
  return f->journal();
}

TEST(DamagedJournal, BadSuperblockMagicIsSkipped) {
  REQUIRE_FIXTURES();
  DamagedJournal d("ext3");
  std::string sb = d.read(0);
  sb[0] = 0;
  d.write(0, sb);
  const auto r = open_damaged(d);
  EXPECT_EQ(r.state, "skipped");
  EXPECT_NE(r.note.find("magic"), std::string::npos) << r.note;
}

TEST(DamagedJournal, AbsurdMaxlenAndFirstAreSkipped) {
  REQUIRE_FIXTURES();
  for (auto [off, value, word] : {std::tuple<size_t, uint32_t, std::string>{16, 0xffffffffu, "s_maxlen"},
                                  {16, 10, "s_maxlen"},
                                  {20, 0, "s_first"},
                                  {20, 0xfffffff0u, "s_first"},
                                  {28, 0xfffffff0u, "s_start"},
                                  {12, 512, "block size"}}) {
    DamagedJournal d("ext3");
    std::string sb = d.read(0);
    put_be32(sb, off, value);
    d.write(0, sb);
    const auto r = open_damaged(d);
    EXPECT_EQ(r.state, "skipped") << word;
    EXPECT_NE(r.note.find(word), std::string::npos) << r.note;
  }
}

TEST(DamagedJournal, ChecksummedSuperblockMismatchIsSkipped) {
  REQUIRE_FIXTURES();
  DamagedJournal d("ext4");
  std::string sb = d.read(0);
  put_be32(sb, 0x48, be32(sb, 0x48) ^ 1);  // s_max_transaction: covered by the checksum only
  d.write(0, sb);
  const auto r = open_damaged(d);
  EXPECT_EQ(r.state, "skipped");
  EXPECT_NE(r.note.find("checksum"), std::string::npos) << r.note;
}

TEST(DamagedJournal, TagPastTheFilesystemEndsTheReplay) {
  REQUIRE_FIXTURES();
  DamagedJournal d("ext3");
  const auto descriptors = d.blocks_of_type(1);
  ASSERT_GE(descriptors.size(), 2u);
  const uint64_t all = open_fs(d.path())->journal().transactions;
  std::string desc = d.read(descriptors.back());
  put_be32(desc, 12, 0xfffffff0u);  // the first tag's block number (32-bit, no checksums)
  d.write(descriptors.back(), desc);
  const auto r = open_damaged(d);
  EXPECT_EQ(r.state, "replayed");
  EXPECT_LT(r.transactions, all);
  EXPECT_NE(r.note.find("past the filesystem"), std::string::npos) << r.note;
}

TEST(DamagedJournal, DescriptorChecksumMismatchEndsTheReplay) {
  REQUIRE_FIXTURES();
  DamagedJournal d("ext4");
  const auto descriptors = d.blocks_of_type(1);
  ASSERT_FALSE(descriptors.empty());
  std::string desc = d.read(descriptors.front());
  desc[d.block_size() - 5] ^= 1;  // inside the tag area, covered by the tail checksum
  d.write(descriptors.front(), desc);
  const auto r = open_damaged(d);
  EXPECT_EQ(r.transactions, 0u);
  EXPECT_NE(r.note.find("checksum"), std::string::npos) << r.note;
}

TEST(DamagedJournal, RevokeRecordWithBadLengthEndsTheReplay) {
  REQUIRE_FIXTURES();
  for (uint32_t count : {0u, 8u, 0x7fffffffu}) {
    // No tail checksums in v1: the count itself is what is wrong. The revoke
    // block is in transaction 3, the ones before still apply.
    DamagedJournal d("v1");
    const auto revokes = d.blocks_of_type(5);
    ASSERT_EQ(revokes.size(), 1u);
    std::string block = d.read(revokes.front());
    put_be32(block, 12, count);
    d.write(revokes.front(), block);
    const auto r = open_damaged(d);
    EXPECT_EQ(r.transactions, 2u) << count;
    EXPECT_NE(r.note.find("revoke block"), std::string::npos) << r.note;
  }
}

// A descriptor chain whose tags never end walks the whole ring: it must stop
// after one pass, not loop.
TEST(DamagedJournal, TagsThatWrapAroundTheLogStop) {
  REQUIRE_FIXTURES();
  DamagedJournal d("ext3");
  const std::string sb = d.read(0);
  const uint32_t maxlen = be32(sb, 16), first = be32(sb, 20), sequence = be32(sb, 24), start = be32(sb, 28);
  // Descriptors of the same sequence, each with as many tags as fit and no
  // LAST_TAG, each followed by its "data" blocks, all around the ring.
  const uint64_t bs = d.block_size();
  const uint64_t tags = (bs - 12) / 8;
  uint64_t pos = start;
  for (uint64_t n = 0; n < (maxlen - first) / (tags + 1) + 2; ++n) {
    std::string desc(bs, '\0');
    put_be32(desc, 0, 0xC03B3998u);
    put_be32(desc, 4, 1);
    put_be32(desc, 8, sequence);
    for (uint64_t t = 0; t < tags; ++t) {
      put_be32(desc, 12 + 8 * t, 100);
      put_be32(desc, 12 + 8 * t + 4, 2);  // SAME_UUID (16-bit flags at +6 for 32-bit tags)
      desc[12 + 8 * t + 4] = 0;
      desc[12 + 8 * t + 5] = 0;
      desc[12 + 8 * t + 6] = 0;
      desc[12 + 8 * t + 7] = 2;
    }
    d.write(pos, desc);
    pos += tags + 1;
    while (pos >= maxlen) pos -= maxlen - first;
  }
  const auto started = std::chrono::steady_clock::now();
  const auto r = open_damaged(d);
  EXPECT_EQ(r.transactions, 0u);
  EXPECT_NE(r.note.find("wraps onto itself"), std::string::npos) << r.note;
  std::cout << "looping journal handled in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count()
            << " ms\n";
}

// The journal's copy of the superblock is damaged: the replayed view cannot
// be opened, so the volume is shown as stored, saying why.
TEST(DamagedJournal, ReplayedSuperblockThatCannotOpenFallsBackToStored) {
  REQUIRE_FIXTURES();
  DamagedJournal d("ext3");
  // 1 KiB blocks: the superblock is filesystem block 1. Find its copies.
  const std::string dump = run_ok("debugfs -R 'logdump -a' " + shell_quote(d.path()) + " 2>/dev/null");
  std::vector<uint64_t> copies;
  const std::string key = "  FS block 1 logged at journal block ";
  for (size_t pos = dump.find(key); pos != std::string::npos; pos = dump.find(key, pos + 1))
    copies.push_back(std::stoull(dump.substr(pos + key.size())));
  ASSERT_FALSE(copies.empty()) << "the superblock is not in the ext3 fixture's journal";
  for (uint64_t j : copies) {
    std::string b = d.read(j);
    b[56] = 0;  // s_magic
    b[57] = 0;
    d.write(j, b);
  }
  const auto r = open_damaged(d);
  EXPECT_EQ(r.state, "skipped");
  EXPECT_NE(r.note.find("could not be opened"), std::string::npos) << r.note;
}

// External journal: reported unsupported, shown as stored.
TEST(DamagedJournal, ExternalJournalIsUnsupported) {
  REQUIRE_FIXTURES();
  TempDir dir;
  const std::string journal = dir / "journal.img", img = dir / "fs.img";
  run_ok("mke2fs -q -F -O journal_dev -b 4096 " + shell_quote(journal) + " 8M");
  // mkfs wants a block device for -J device=: a loop device over the file.
  std::string loop = run_ok("losetup -f --show " + shell_quote(journal));
  loop.erase(loop.find_last_not_of('\n') + 1);
  run_ok("mkfs.ext4 -q -F -J device=" + loop + " -b 4096 " + shell_quote(img) + " 32M");
  run_ok("losetup -d " + loop);
  run_ok("debugfs -w -R 'feature needs_recovery' " + shell_quote(img));
  FilesystemPtr f = open_fs(img);
  EXPECT_EQ(f->journal().state, "unsupported");
  EXPECT_NE(f->journal().note.find("external journal"), std::string::npos) << f->journal().note;
}

// ---- a log as long as a guest likes ----------------------------------------

// tests/fixtures/long_journal.py: mkfs.ext4, then a log of `blocks` blocks
// written by hand (transactions of 8 descriptors of 126 tags, each tag a
// different block, and a commit; the tagged data blocks are never written).
std::string make_long_journal(const TempDir& dir, uint64_t blocks) {
  const fs::path script = fs::path(__FILE__).parent_path().parent_path() / "fixtures" / "long_journal.py";
  const std::string img = dir / "long.img";
  run_ok("python3 " + shell_quote(script.string()) + " " + shell_quote(img) + " " + std::to_string(blocks));
  return img;
}

// What long_journal.py writes into a log of `blocks` blocks.
constexpr uint64_t kLongTransactionBlocks = 8 * 127 + 1;
constexpr uint64_t kLongTransactionTags = 8 * 126;

// This process's peak resident memory (VmHWM), for the printed figures.
std::string peak_rss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return line.substr(line.find_first_not_of(" \t", 6));
  return "?";
}

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::stoull(v) : fallback;
}

// The replay keeps a map entry per tagged block and reads every log block it
// walks: a log past the cap (a guest can write one of 10,000,000 blocks in
// ~88 MB of its disk) is not replayed at all, and says so; the volume is
// shown as stored. SENDENSE_LONG_JOURNAL_BLOCKS sets the log's length (to
// measure the replay's memory and time on larger logs).
TEST(JournalCap, LogPastTheCapIsSkippedAndShownAsStored) {
  TempDir dir;
  constexpr uint64_t kCap = sendense::ext::kMaxJournalReplayEntries;
  const uint64_t blocks = env_or("SENDENSE_LONG_JOURNAL_BLOCKS", kCap + 20'000);
  const std::string img = make_long_journal(dir, blocks);
  const auto started = std::chrono::steady_clock::now();
  FilesystemPtr f = open_fs(img);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  std::cout << "open with a log of " << blocks << " blocks: " << ms << " ms, journal " << f->journal().state
            << " (" << f->journal().blocks << " blocks), peak RSS " << peak_rss() << "\n";
  EXPECT_EQ(f->journal().state, "skipped");
  EXPECT_NE(f->journal().note.find("cap of " + std::to_string(kCap)), std::string::npos) << f->journal().note;
  EXPECT_NE(f->journal().note.find("shown as stored"), std::string::npos) << f->journal().note;
  EXPECT_EQ(f->journal().blocks, 0u);
  EXPECT_TRUE(lookup_path(*f, "/lost+found"));
  EXPECT_THROW(sendense::ext::replay_ext_journal(sendense::open_raw_image(img), "long"), Error);
}

// Below the cap the same kind of log is replayed whole: every tagged block
// mapped once, every transaction applied.
TEST(JournalCap, LongLogBelowTheCapIsReplayed) {
  TempDir dir;
  const uint64_t blocks = 100'000;
  const std::string img = make_long_journal(dir, blocks);
  const auto r = sendense::ext::replay_ext_journal(sendense::open_raw_image(img), "long");
  const uint64_t transactions = blocks / kLongTransactionBlocks;
  EXPECT_EQ(r.transactions, transactions);
  EXPECT_EQ(r.copies.size(), transactions * kLongTransactionTags);
  EXPECT_EQ(r.stop_reason, "");
  for (size_t i = 1; i < r.copies.size(); ++i)
    ASSERT_LT(r.copies[i - 1].fs_block, r.copies[i].fs_block) << "copies not sorted or not unique at " << i;
  FilesystemPtr f = open_fs(img);
  EXPECT_EQ(f->journal().state, "replayed") << f->journal().note;
  EXPECT_EQ(f->journal().blocks, transactions * kLongTransactionTags);
  EXPECT_TRUE(lookup_path(*f, "/lost+found"));
}

// A 128 MiB journal full of one transaction's blocks (written by debugfs):
// the replay time is printed, not asserted.
TEST(JournalSpeed, Replay128MiBJournal) {
  REQUIRE_FIXTURES();
  TempDir dir;
  const std::string img = dir / "big.img", data = dir / "data.bin", cmds = dir / "cmds";
  run_ok("mkfs.ext4 -q -F -J size=128 " + shell_quote(img) + " 1G");
  // 30000 blocks (117 MiB) in free space of group 3, away from its metadata.
  run_ok("head -c " + std::to_string(30000ull * 4096) + " /dev/urandom > " + shell_quote(data));
  sendense::test::write_file(cmds, "jo -c\njw -b 100000-129999 " + data + "\njc\n");
  run_ok("debugfs -w -f " + shell_quote(cmds) + " " + shell_quote(img) + " >/dev/null 2>&1");
  const auto started = std::chrono::steady_clock::now();
  const auto r = sendense::ext::replay_ext_journal(sendense::open_raw_image(img), "big");
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  EXPECT_EQ(r.copies.size(), 30000u);
  std::cout << "replay of a 128 MiB journal (" << r.copies.size() << " blocks, " << r.features << "): " << ms
            << " ms\n";
  FilesystemPtr f = open_fs(img);
  EXPECT_EQ(f->journal().blocks, 30000u);
}

}  // namespace
