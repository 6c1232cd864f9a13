// The NTFS reader against the images made by tests/fixtures/make-ntfs-fixtures.sh
// (content written through a real ntfs-3g mount, then put in a GPT disk and
// converted to qcow2). Everything the source tree holds is compared through
// the Filesystem: names, types, sizes, content, mtimes, streams, links.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <tuple>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/fs/ntfs/ntfs_names.h"
#include "readers/fs/ntfs/ntfs_reparse.h"
#include "readers/fs/registry.h"
#include "readers/volume/volume.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using sendense::Attr;
using sendense::Error;
using sendense::Filesystem;
using sendense::FilesystemPtr;
using sendense::FsOpenOptions;

namespace {

std::string fixtures() { return SENDENSE_NTFS_FIXTURES_DIR; }

// Skips (or fails under SENDENSE_NO_SKIP) when the fixture script skipped.
#define REQUIRE_NTFS_FIXTURES()                                                          \
  do {                                                                                   \
    if (sendense::test::file_exists(fixtures() + "/SKIPPED"))                           \
      SENDENSE_SKIP(sendense::test::read_file(fixtures() + "/SKIPPED"));                \
    ASSERT_TRUE(sendense::test::file_exists(fixtures() + "/manifest.env"))              \
        << "run the make_ntfs_fixtures test first (ctest fixture ntfs_images)";          \
  } while (0)

sendense::test::Manifest manifest() { return sendense::test::Manifest(fixtures() + "/manifest.env"); }

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The filesystem of volume `volume` of the qcow2 disk `image`.
FilesystemPtr open_volume(const std::string& image, const std::string& volume, const FsOpenOptions& options = {}) {
  sendense::DiskLayout layout =
      sendense::discover_volumes(sendense::open_image(image, sendense::ImageFormat::qcow2));
  for (const auto& v : layout.volumes) {
    if (v.name != volume) continue;
    EXPECT_EQ(v.type, sendense::FsType::ntfs) << volume;
    return sendense::open_filesystem(v.type, v.device, "test/" + volume, options);
  }
  throw std::runtime_error("no volume " + volume + " in " + image);
}

Attr resolve(Filesystem& f, const fs::path& rel) {
  Attr a = f.getattr(f.root_ino());
  for (const auto& part : rel) {
    if (part == ".") continue;
    auto next = f.lookup(a.ino, part.string());
    if (!next) throw std::runtime_error("not found: " + rel.string());
    a = *next;
  }
  return a;
}

std::string read_all(Filesystem& f, uint64_t ino, size_t chunk) {
  const uint64_t h = f.open(ino);
  std::string out;
  std::string buf(chunk, '\0');
  for (;;) {
    const size_t n = f.read(h, out.size(), std::as_writable_bytes(std::span(buf)));
    if (n == 0) break;
    out.append(buf, 0, n);
  }
  f.release(h);
  return out;
}

std::map<std::string, std::string> user_xattrs(const fs::path& p) {
  std::map<std::string, std::string> out;
  char names[4096];
  const ssize_t n = ::llistxattr(p.c_str(), names, sizeof names);
  for (ssize_t i = 0; i < n;) {
    std::string name(names + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    if (!name.starts_with("user.")) continue;
    char value[65536];
    const ssize_t len = ::lgetxattr(p.c_str(), name.c_str(), value, sizeof value);
    out[name] = std::string(value, static_cast<size_t>(std::max<ssize_t>(len, 0)));
  }
  return out;
}

int error_code(const std::function<void()>& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return 0;
}

class NtfsMain : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_NTFS_FIXTURES();
    m_ = std::make_unique<sendense::test::Manifest>(manifest());
    src_ = (*m_)["SRC"];
    image_ = (*m_)["WIN01_IMAGE"];
    fs_ = open_volume(image_, (*m_)["WIN01_NTFS_VOLUME"]);
  }

  std::unique_ptr<sendense::test::Manifest> m_;
  fs::path src_;
  std::string image_;
  FilesystemPtr fs_;
};

TEST_F(NtfsMain, WholeTreeMatchesTheFilesWritten) {
  Filesystem& f = *fs_;
  EXPECT_EQ(f.type_name(), "ntfs");
  EXPECT_EQ(f.root_ino(), 5u);
  size_t files = 0, dirs = 0, links = 0;
  for (auto it = fs::recursive_directory_iterator(src_); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path rel = it->path().lexically_relative(src_);
    SCOPED_TRACE(rel.string());
    struct stat st {};
    ASSERT_EQ(::lstat(it->path().c_str(), &st), 0);
    Attr a = resolve(f, rel);
    EXPECT_EQ(a.mode & S_IFMT, st.st_mode & S_IFMT);
    EXPECT_EQ(a.uid, 0u);
    EXPECT_EQ(a.gid, 0u);
    EXPECT_EQ(a.mtime.tv_sec, st.st_mtim.tv_sec);
    EXPECT_EQ(a.mtime.tv_nsec, st.st_mtim.tv_nsec / 100 * 100) << "NTFS keeps 100 ns units";
    EXPECT_NE(a.generation, 0u);
    if (S_ISDIR(st.st_mode)) {
      ++dirs;
      EXPECT_EQ(a.mode & 07777, 0755u);
      std::set<std::string> want, got;
      for (const auto& e : fs::directory_iterator(it->path())) want.insert(e.path().filename().string());
      for (const auto& e : f.readdir(a.ino))
        if (e.name != "." && e.name != "..") got.insert(e.name);
      EXPECT_EQ(got, want);
    } else if (S_ISLNK(st.st_mode)) {
      ++links;
      EXPECT_EQ(a.mode & 07777, 0777u);
      EXPECT_EQ(f.readlink(a.ino), fs::read_symlink(it->path()).string());
      EXPECT_EQ(a.size, fs::read_symlink(it->path()).string().size());
    } else {
      ++files;
      EXPECT_EQ(a.mode & 07777, 0644u);
      ASSERT_EQ(a.size, static_cast<uint64_t>(st.st_size));
      EXPECT_EQ(a.nlink, st.st_nlink);
      const std::string want = file_bytes(it->path());
      const std::string got = read_all(f, a.ino, 1 << 20);
      EXPECT_TRUE(got == want) << "content differs";
      std::map<std::string, std::string> xattrs;
      for (const auto& name : f.listxattr(a.ino)) xattrs[name] = f.getxattr(a.ino, name).value_or("<missing>");
      EXPECT_EQ(xattrs, user_xattrs(it->path())) << "alternate data streams";
    }
  }
  EXPECT_GT(files, 5200u);
  EXPECT_GT(dirs, 20u);
  EXPECT_GE(links, 7u);
}

TEST_F(NtfsMain, ReadsInOddPiecesAndFromManyThreads) {
  Attr big = resolve(*fs_, "large-64MiB.bin");
  Attr frag = resolve(*fs_, "frag/fragmented.bin");
  Attr comp = resolve(*fs_, "compressed/mixed.bin");
  Attr sparse = resolve(*fs_, "sparse/sparse.bin");
  EXPECT_LT(sparse.blocks * 512, sparse.size / 2) << "the sparse file keeps its holes";
  EXPECT_LT(resolve(*fs_, "compressed/numbers.txt").blocks * 512, resolve(*fs_, "compressed/numbers.txt").size)
      << "the compressed file is stored compressed";
  EXPECT_GT(std::stoul((*m_)["FRAG_RUNS"]), 200u) << "the fragmented file is fragmented";
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (const auto& [attr, rel, chunk] : std::vector<std::tuple<Attr, std::string, size_t>>{
           {big, "large-64MiB.bin", 131071},
           {frag, "frag/fragmented.bin", 4093},
           {comp, "compressed/mixed.bin", 5000},
           {sparse, "sparse/sparse.bin", 1 << 20},
           {big, "large-64MiB.bin", 1 << 20}}) {
    threads.emplace_back([&, attr = attr, rel = rel, chunk = chunk] {
      if (read_all(*fs_, attr.ino, chunk) != file_bytes(src_ / rel)) ++mismatches;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(NtfsMain, HardLinksShareTheInode) {
  Attr a = resolve(*fs_, "hardlinks/a.txt");
  Attr b = resolve(*fs_, "hardlinks/b.txt");
  Attr c = resolve(*fs_, "hardlinks/other/c.txt");
  EXPECT_EQ(a.ino, b.ino);
  EXPECT_EQ(a.ino, c.ino);
  EXPECT_EQ(a.nlink, 3u);
}

TEST_F(NtfsMain, MetafilesAndDosNamesAreNotListed) {
  std::set<std::string> root;
  for (const auto& e : fs_->readdir(fs_->root_ino())) {
    root.insert(e.name);
    if (e.name != "." && e.name != "..") {
      EXPECT_GE(e.ino, 16u) << e.name;
    }
  }
  for (const char* meta : {"$MFT", "$MFTMirr", "$LogFile", "$Volume", "$Bitmap", "$Boot", "$Extend", "$UpCase"}) {
    EXPECT_EQ(root.count(meta), 0u) << meta;
    EXPECT_FALSE(fs_->lookup(fs_->root_ino(), meta)) << meta;
  }
  EXPECT_EQ(error_code([&] { fs_->getattr(0); }), ENOENT);  // $MFT
  // Long names have DOS 8.3 aliases on disk (ntfs-3g makes none, mkntfs's
  // own files do not count); exact-case lookups only.
  EXPECT_TRUE(fs_->lookup(resolve(*fs_, "names").ino, "MixedCase.TXT"));
  EXPECT_FALSE(fs_->lookup(resolve(*fs_, "names").ino, "mixedcase.txt"));
}

TEST_F(NtfsMain, UnpairedSurrogateNameIsEscapedAndOpenable) {
  const std::string shown = "surrogate-\xef\xbf\xbd" "d800.txt";
  Attr dir = resolve(*fs_, "odd");
  std::vector<std::string> names;
  for (const auto& e : fs_->readdir(dir.ino)) names.push_back(e.name);
  EXPECT_NE(std::find(names.begin(), names.end(), shown), names.end());
  auto a = fs_->lookup(dir.ino, shown);
  ASSERT_TRUE(a);
  EXPECT_EQ(read_all(*fs_, a->ino, 4096), "bad name\n");
}

TEST_F(NtfsMain, WindowsAttributesSecurityAndTimesAsXattrs) {
  for (const char* rel : {"compressed/numbers.txt", "docs/readme.txt", "compressed", "links/relative-link"}) {
    SCOPED_TRACE(rel);
    std::string key = rel;
    std::replace(key.begin(), key.end(), '/', '_');
    const std::string want_hex = sendense::test::read_file(fixtures() + "/ntfs3g/" + key + ".attrib");
    auto value = fs_->getxattr(resolve(*fs_, rel).ino, "system.ntfs_attrib");
    ASSERT_TRUE(value);
    ASSERT_EQ(value->size(), 4u);
    char hex[9];
    std::snprintf(hex, sizeof hex, "%02x%02x%02x%02x", static_cast<unsigned char>((*value)[0]),
                  static_cast<unsigned char>((*value)[1]), static_cast<unsigned char>((*value)[2]),
                  static_cast<unsigned char>((*value)[3]));
    EXPECT_EQ(hex, want_hex) << "same as ntfs-3g reports";
  }
  Attr readme = resolve(*fs_, "docs/readme.txt");
  auto crtime = fs_->getxattr(readme.ino, "system.ntfs_crtime");
  ASSERT_TRUE(crtime);
  ASSERT_EQ(crtime->size(), 8u);
  uint64_t raw = 0;
  for (int i = 7; i >= 0; --i) raw = (raw << 8) | static_cast<unsigned char>((*crtime)[static_cast<size_t>(i)]);
  const int64_t unix_seconds = static_cast<int64_t>(raw / 10'000'000) - 11644473600LL;
  struct stat st {};
  ASSERT_EQ(::stat((*m_)["MAIN_PART"].c_str(), &st), 0);
  EXPECT_LE(std::llabs(unix_seconds - st.st_mtim.tv_sec), 3600) << "created when the fixture was written";
  auto acl = fs_->getxattr(readme.ino, "system.ntfs_acl");
  ASSERT_TRUE(acl);
  ASSERT_GE(acl->size(), 20u);
  EXPECT_EQ((*acl)[0], 1) << "self-relative security descriptor, revision 1";
  // Only the streams are listed (as ntfs-3g does).
  for (const auto& name : fs_->listxattr(readme.ino)) EXPECT_TRUE(name.starts_with("user.")) << name;
  EXPECT_FALSE(fs_->getxattr(readme.ino, "user.no-such-stream"));
}

TEST_F(NtfsMain, ReparsePointsAreSymlinksWithTheStoredTarget) {
  Attr junction = resolve(*fs_, "reparse/junction");
  EXPECT_TRUE(S_ISLNK(junction.mode));
  auto data = fs_->getxattr(junction.ino, "system.ntfs_reparse_data");
  ASSERT_TRUE(data);
  ASSERT_GE(data->size(), 8u);
  EXPECT_EQ(data->substr(0, 4), std::string("\x03\x00\x00\xa0", 4)) << "IO_REPARSE_TAG_MOUNT_POINT";
  EXPECT_EQ(error_code([&] { fs_->open(junction.ino); }), EINVAL);
  EXPECT_EQ(error_code([&] { fs_->readdir(junction.ino); }), 0) << "a junction is still a directory inside";
}

// Reparse data written through a real ntfs-3g mount (the fixture): Windows
// symlinks and junctions rooted without a drive, UNC targets, a WSL symlink
// to /etc/shadow and ntfs-3g's own symlink to /etc/passwd all read back
// relative. Through the mount the host kernel follows whatever we return.
TEST_F(NtfsMain, NoSymlinkTargetIsAbsolute) {
  const std::pair<std::string, std::string> expected[] = {
      {"reparse/win-rooted-symlink", "etc/shadow"}, {"reparse/win-relative-flag-rooted", "etc/passwd"},
      {"reparse/win-unc-symlink", "UNC/srv/share/f"}, {"reparse/junction-rooted", "Windows"},
      {"reparse/win-root-only", "."},                {"reparse/wsl-absolute-symlink", "etc/shadow"},
      {"links/absolute-link", "etc/passwd"},          {"reparse/win-absolute-symlink", "C:/Windows/System32/drivers/etc/hosts"},
  };
  for (const auto& [path, want] : expected) {
    Attr a = resolve(*fs_, path);
    EXPECT_TRUE(S_ISLNK(a.mode)) << path;
    EXPECT_EQ(fs_->readlink(a.ino), want) << path;
  }
  size_t links = 0;
  for (auto it = fs::recursive_directory_iterator(src_); it != fs::recursive_directory_iterator(); ++it) {
    if (!it->is_symlink()) continue;
    ++links;
    const std::string target = fs_->readlink(resolve(*fs_, it->path().lexically_relative(src_)).ino);
    EXPECT_FALSE(target.starts_with("/")) << it->path() << " -> " << target;
  }
  EXPECT_GE(links, 12u);
}

TEST_F(NtfsMain, DatalessReparsePointIsAClearReadError) {
  std::ifstream list(fixtures() + "/special/dataless.list");
  std::string rel;
  size_t count = 0;
  while (std::getline(list, rel)) {
    ++count;
    Attr a = resolve(*fs_, rel);
    EXPECT_TRUE(S_ISREG(a.mode)) << rel;
    std::string message;
    EXPECT_EQ(error_code([&] { fs_->open(a.ino); }, &message), EIO) << rel;
    EXPECT_NE(message.find("deduplication"), std::string::npos) << message;
  }
  EXPECT_GT(count, 0u);
}

TEST_F(NtfsMain, StatfsFromClusterCounts) {
  auto st = fs_->statfs();
  struct stat part {};
  ASSERT_EQ(::stat((*m_)["MAIN_PART"].c_str(), &part), 0);
  EXPECT_EQ(st.block_size, 512u);
  EXPECT_LE(st.blocks * st.block_size, static_cast<uint64_t>(part.st_size));
  EXPECT_GE(st.blocks * st.block_size, static_cast<uint64_t>(part.st_size) - 4096);
  EXPECT_GT(st.blocks_free, 0u);
  EXPECT_LT(st.blocks_free, st.blocks - (64u << 20) / 512) << "the 64 MiB file is counted as used";
  EXPECT_GT(st.files, 5200u);
}

TEST_F(NtfsMain, OwnershipAndModesFollowTheOptions) {
  FsOpenOptions o;
  o.ntfs_uid = 1000;
  o.ntfs_gid = 100;
  o.ntfs_dir_mode = 0750;
  o.ntfs_file_mode = 0640;
  FilesystemPtr f = open_volume(image_, (*m_)["WIN01_NTFS_VOLUME"], o);
  Attr dir = resolve(*f, "docs");
  Attr file = resolve(*f, "docs/readme.txt");
  Attr link = resolve(*f, "links/relative-link");
  EXPECT_EQ(dir.mode, S_IFDIR | 0750u);
  EXPECT_EQ(file.mode, S_IFREG | 0640u);
  EXPECT_EQ(link.mode, S_IFLNK | 0777u);
  for (const Attr& a : {dir, file, link}) {
    EXPECT_EQ(a.uid, 1000u);
    EXPECT_EQ(a.gid, 100u);
  }
}

TEST_F(NtfsMain, ImageIsNeverWritten) {
  const std::string before = sendense::test::sha256_of(image_);
  {
    FilesystemPtr f = open_volume(image_, (*m_)["WIN01_NTFS_VOLUME"]);
    read_all(*f, resolve(*f, "docs/readme.txt").ino, 4096);
    f->statfs();
  }
  EXPECT_EQ(sendense::test::sha256_of(image_), before);
}

TEST(NtfsDirty, DirtyAndHibernatedVolumeIsBrowsable) {
  REQUIRE_NTFS_FIXTURES();
  auto m = manifest();
  const std::string image = m["FIXTURES_DIR"] + "/repo/win02/" + m["WIN02_ID"] + ".qcow2";
  FilesystemPtr f = open_volume(image, "part1");
  const auto report = f->journal();
  EXPECT_EQ(report.state, "skipped");
  EXPECT_NE(report.note.find("dirty"), std::string::npos) << report.note;
  EXPECT_NE(report.note.find("hibernated"), std::string::npos) << report.note;
  EXPECT_EQ(read_all(*f, resolve(*f, "before-crash.txt").ino, 4096), "written before the crash\n");
  // The clean volume says so.
  EXPECT_EQ(open_volume(m["WIN01_IMAGE"], m["WIN01_NTFS_VOLUME"])->journal().state, "clean");
}

TEST(NtfsDamaged, BadRecordsAndRunlistsAreClearErrors) {
  REQUIRE_NTFS_FIXTURES();
  auto m = manifest();
  const std::string image = m["FIXTURES_DIR"] + "/repo/win03/" + m["WIN03_ID"] + ".qcow2";
  const std::string before = sendense::test::sha256_of(image);
  FilesystemPtr f = open_volume(image, "part1");
  EXPECT_EQ(read_all(*f, resolve(*f, "good.txt").ino, 4096), "still readable\n");
  for (const char* name : {"bad-record.txt", "bad-fixup.bin"}) {
    std::string message;
    EXPECT_EQ(error_code([&] { f->lookup(f->root_ino(), name); }, &message), EIO) << name;
    EXPECT_NE(message.find("test/part1"), std::string::npos) << message;
    EXPECT_NE(message.find("MFT record"), std::string::npos) << message;
  }
  std::string message;
  EXPECT_EQ(error_code([&] { f->open(resolve(*f, "bad-runlist.bin").ino); }, &message), EIO);
  EXPECT_NE(message.find("outside the volume"), std::string::npos) << message;
  Attr encrypted = resolve(*f, "encrypted.bin");
  EXPECT_TRUE(S_ISREG(encrypted.mode)) << "an encrypted file is still listed";
  message.clear();
  EXPECT_EQ(error_code([&] { f->open(encrypted.ino); }, &message), EACCES);
  EXPECT_NE(message.find("encrypted"), std::string::npos) << message;
  // An index entry naming MFT record 2^40 + n: not listed, EIO by name.
  Attr far = resolve(*f, "far");
  std::set<std::string> far_names;
  for (const auto& e : f->readdir(far.ino)) far_names.insert(e.name);
  EXPECT_EQ(far_names, (std::set<std::string>{".", "..", "near.txt"}));
  message.clear();
  EXPECT_EQ(error_code([&] { f->lookup(far.ino, "far-away.txt"); }, &message), EIO);
  EXPECT_NE(message.find("2^40"), std::string::npos) << message;
  // Still fine afterwards.
  EXPECT_EQ(read_all(*f, resolve(*f, "good.txt").ino, 4096), "still readable\n");

  sendense::DiskLayout layout = sendense::discover_volumes(sendense::open_image(image, sendense::ImageFormat::qcow2));
  ASSERT_EQ(layout.volumes.size(), 2u);
  message.clear();
  EXPECT_EQ(error_code([&] { sendense::open_filesystem(layout.volumes[1].type, layout.volumes[1].device, "test/part2"); },
                       &message),
            EIO);
  EXPECT_NE(message.find("test/part2"), std::string::npos) << message;
  EXPECT_EQ(sendense::test::sha256_of(image), before);
}

// Walks a whole tree reading every file, ignoring errors (they must be
// sendense::Error, never a crash). Returns the number of entries seen.
size_t walk_ignoring_errors(Filesystem& f, uint64_t dir, int depth, size_t& errors) {
  size_t seen = 0;
  std::vector<sendense::DirEntry> entries;
  try {
    entries = f.readdir(dir);
  } catch (const Error&) {
    ++errors;
    return 0;
  }
  for (const auto& e : entries) {
    if (e.name == "." || e.name == ".." || seen > 20000) continue;
    ++seen;
    try {
      auto a = f.lookup(dir, e.name);
      if (!a) continue;
      if (S_ISDIR(a->mode) && depth < 8) {
        seen += walk_ignoring_errors(f, a->ino, depth + 1, errors);
      } else if (S_ISREG(a->mode)) {
        read_all(f, a->ino, 65536);
        for (const auto& x : f.listxattr(a->ino)) f.getxattr(a->ino, x);
      } else if (S_ISLNK(a->mode)) {
        f.readlink(a->ino);
      }
      f.getxattr(a->ino, "system.ntfs_acl");
      f.getxattr(a->ino, "system.ntfs_reparse_data");
    } catch (const Error&) {
      ++errors;
    }
  }
  return seen;
}

// Random damage to the MFT records of files (not the metafiles, which
// only make the mount fail): every outcome is an Error or data, never a
// crash, a hang or a sanitizer report.
TEST(NtfsDamaged, RandomlyDamagedRecordsNeverCrash) {
  REQUIRE_NTFS_FIXTURES();
  auto m = manifest();
  sendense::test::TempDir tmp;
  const std::string copy = tmp / "damaged.img";
  const std::string original = sendense::test::read_file(m["BAD_PART"]);
  // The MFT from the boot sector (bytes/sector at 0x0b, sectors/cluster at
  // 0x0d, $MFT cluster at 0x30); a fresh volume's MFT is contiguous.
  auto le = [&](size_t off, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(original[off + static_cast<size_t>(i)]);
    return v;
  };
  ASSERT_EQ(original.compare(3, 8, "NTFS    "), 0);
  const uint64_t cluster = le(0x0b, 2) * le(0x0d, 1);
  const size_t mft16 = static_cast<size_t>(le(0x30, 8) * cluster + 16 * 1024);
  ASSERT_LT(mft16 + 64 * 1024, original.size());
  std::mt19937 rng(20261124);
  size_t errors = 0, failed_mounts = 0, entries = 0;
  for (int round = 0; round < 90; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::string data = original;
    // Rounds 60+ hit the metafile records (0-15) with a few bytes instead.
    const bool metafiles = round >= 60;
    for (int i = 0; i < (metafiles ? 4 : 200); ++i) {
      const size_t off = metafiles ? mft16 - 16 * 1024 + rng() % (16 * 1024) : mft16 + rng() % (64 * 1024);
      data[off] = static_cast<char>(rng());
    }
    sendense::test::write_file(copy, data);
    try {
      FilesystemPtr f = sendense::open_filesystem(sendense::FsType::ntfs, sendense::open_raw_image(copy),
                                                  "fuzz/round" + std::to_string(round));
      entries += walk_ignoring_errors(*f, f->root_ino(), 0, errors);
      f->statfs();
    } catch (const Error&) {
      ++failed_mounts;
    }
  }
  std::cerr << "damaged rounds: " << entries << " entries walked, " << errors << " errors, " << failed_mounts
            << " volumes refused\n";
  EXPECT_GT(errors, 0u) << "the damage was noticed";
  EXPECT_GT(entries, 0u) << "and the rest was still read";
}

// A copy of the damaged-volume partition (BAD_PART) in which `patch` may
// change the MFT record of good.txt; returns the copy's path. `patch` gets
// the image bytes, the record's offset and its first attribute of `type`.
std::string patched_good_txt(const sendense::test::TempDir& tmp, uint32_t type,
                             const std::function<void(std::string& data, size_t value)>& patch) {
  auto m = manifest();
  const std::string copy = tmp / "patched.img";
  std::string data = sendense::test::read_file(m["BAD_PART"]);
  uint64_t record = 0;
  {
    FilesystemPtr f = sendense::open_filesystem(sendense::FsType::ntfs, sendense::open_raw_image(m["BAD_PART"]), "t");
    record = resolve(*f, "good.txt").ino;
  }
  auto le = [&](size_t off, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(data[off + static_cast<size_t>(i)]);
    return v;
  };
  EXPECT_EQ(data.compare(3, 8, "NTFS    "), 0);
  const uint64_t cluster = le(0x0b, 2) * le(0x0d, 1);
  const int8_t cpr = static_cast<int8_t>(le(0x40, 1));
  const uint64_t record_size = cpr > 0 ? cpr * cluster : uint64_t{1} << -cpr;
  const size_t rec = static_cast<size_t>(le(0x30, 8) * cluster + record * record_size);
  EXPECT_EQ(data.compare(rec, 4, "FILE"), 0);
  EXPECT_EQ(le(rec + 0x2c, 4), record);
  for (size_t attr = rec + le(rec + 0x14, 2); attr + 8 < rec + record_size && le(attr, 4) != 0xffffffffu;
       attr += le(attr + 4, 4)) {
    if (le(attr, 4) != type) continue;
    patch(data, attr + le(attr + 0x14, 2));
    sendense::test::write_file(copy, data);
    return copy;
  }
  ADD_FAILURE() << "no attribute 0x" << std::hex << type << " in good.txt's record";
  return copy;
}

void put_le(std::string& data, size_t at, uint64_t v, size_t n) {
  for (size_t b = 0; b < n; ++b) {
    ASSERT_LT((at + b) % 512, 510u) << "would hit an update-sequence slot";
    data[at + b] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
}

// $STANDARD_INFORMATION times are guest data: the extremes of the signed
// 64-bit range (1601 - 29 000 years, 1601 + 29 000 years) must convert
// without signed overflow (the sanitizer build aborts on it) and land on
// the same second as floor((raw - 1970 epoch) / 10^7).
TEST(NtfsDamaged, ExtremeTimestampsConvertWithoutOverflow) {
  REQUIRE_NTFS_FIXTURES();
  sendense::test::TempDir tmp;
  const int64_t raws[] = {INT64_MIN, INT64_MAX, INT64_MIN + 1, -1};  // crtime, mtime, ctime (MFT change), atime
  const std::string copy = patched_good_txt(tmp, 0x10, [&](std::string& data, size_t value) {
    for (size_t i = 0; i < 4; ++i) put_le(data, value + i * 8, static_cast<uint64_t>(raws[i]), 8);
  });
  auto expect_time = [](int64_t raw, const timespec& got, const char* what) {
    // The 1601-to-1970 offset is a whole number of seconds (11644473600 s),
    // so floor division of raw and of (raw - offset) share the remainder.
    int64_t sec = raw / 10'000'000, rem = raw % 10'000'000;
    if (rem < 0) {
      rem += 10'000'000;
      --sec;
    }
    EXPECT_EQ(static_cast<int64_t>(got.tv_sec), sec - 11644473600LL) << what;
    EXPECT_EQ(static_cast<int64_t>(got.tv_nsec), rem * 100) << what;
  };
  FilesystemPtr f = sendense::open_filesystem(sendense::FsType::ntfs, sendense::open_raw_image(copy), "test/times");
  const Attr a = resolve(*f, "good.txt");
  expect_time(raws[1], a.mtime, "mtime");
  expect_time(raws[2], a.ctime, "ctime");
  expect_time(raws[3], a.atime, "atime");
  EXPECT_EQ(read_all(*f, a.ino, 4096), "still readable\n");
}

// libntfs-3g declares some on-disk fields as C enums (file attribute flags,
// the $FILE_NAME namespace). A guest value outside the enumerators' range
// must be read as plain bits, not loaded as the enum (undefined; the
// sanitizer build aborts the daemon on it).
TEST(NtfsDamaged, OutOfRangeFlagValuesAreReadAsPlainBits) {
  REQUIRE_NTFS_FIXTURES();
  sendense::test::TempDir tmp;
  {
    // $FILE_NAME namespace byte (0x41 into the value) 0x73: no such namespace,
    // and not the DOS one, so it still counts as a link.
    const std::string copy =
        patched_good_txt(tmp, 0x30, [&](std::string& data, size_t value) { put_le(data, value + 0x41, 0x73, 1); });
    FilesystemPtr f = sendense::open_filesystem(sendense::FsType::ntfs, sendense::open_raw_image(copy), "test/fn");
    const Attr a = f->getattr(resolve(*f, "good.txt").ino);
    EXPECT_EQ(a.nlink, 1u);
    EXPECT_EQ(read_all(*f, a.ino, 4096), "still readable\n");
  }
  {
    // $STANDARD_INFORMATION file attributes (0x20 into the value) with the
    // two top bits set, which no enumerator covers.
    uint32_t flags = 0;
    const std::string copy = patched_good_txt(tmp, 0x10, [&](std::string& data, size_t value) {
      for (int b = 3; b >= 0; --b) flags = (flags << 8) | static_cast<unsigned char>(data[value + 0x20 + b]);
      flags |= 0xc0000000u;
      put_le(data, value + 0x20, flags, 4);
    });
    FilesystemPtr f = sendense::open_filesystem(sendense::FsType::ntfs, sendense::open_raw_image(copy), "test/si");
    const Attr a = resolve(*f, "good.txt");
    EXPECT_TRUE(S_ISREG(a.mode));
    EXPECT_EQ(read_all(*f, a.ino, 4096), "still readable\n");
    const auto shown = f->getxattr(a.ino, "system.ntfs_attrib");
    ASSERT_TRUE(shown);
    ASSERT_EQ(shown->size(), 4u);
    uint32_t got = 0;
    for (int b = 3; b >= 0; --b) got = (got << 8) | static_cast<unsigned char>((*shown)[static_cast<size_t>(b)]);
    EXPECT_EQ(got, flags);
  }
}

// $MFT's own runlist damaged: the library cannot load $MFT and the volume
// fails to open. The daemon retries a failed attach every 3 s, so whatever
// libntfs-3g allocated on the way must be freed each time: LeakSanitizer
// (ASan builds) is asked after several attempts.
TEST(NtfsDamaged, FailedOpenOfDamagedMftRunlistLeaksNothing) {
  sendense::test::TempDir tmp;
  const fs::path tool = fs::path(__FILE__).parent_path().parent_path() / "fixtures" / "ntfs_fixture_tool.py";
  for (const std::string how : {"far", "no-length"}) {  // first run past the volume; no length field
    const std::string img = tmp / ("mft-runlist-" + how + ".img");
    sendense::test::run_ok("truncate -s 8M " + sendense::test::shell_quote(img) + " && mkntfs -q -F -Q " +
                           sendense::test::shell_quote(img) + " >/dev/null 2>&1");
    sendense::test::run_ok("python3 " + sendense::test::shell_quote(tool.string()) + " corrupt-mft-runlist " +
                           sendense::test::shell_quote(img) + " " + how);
    for (int attempt = 0; attempt < 5; ++attempt) {
      std::string message;
      EXPECT_EQ(error_code([&] { sendense::open_filesystem(sendense::FsType::ntfs, sendense::open_raw_image(img),
                                                           "test/mft-runlist", {}); },
                           &message),
                EIO)
          << how;
      EXPECT_NE(message.find("test/mft-runlist"), std::string::npos) << message;
      EXPECT_NE(message.find("$MFT"), std::string::npos) << message;
    }
  }
#if defined(__SANITIZE_ADDRESS__)
  EXPECT_EQ(__lsan_do_recoverable_leak_check(), 0) << "failed opens leaked memory (LeakSanitizer's report above)";
#endif
}

// $Bitmap's stored size is guest data and the library counts free clusters
// by reading it to that size (zeros past the initialized part): 256 GiB
// claimed on a 16 MiB volume kept statfs, and the volume lock, busy for
// hours. Now a clear EIO naming the structure; files still read.
TEST(NtfsDamaged, HugeBitmapSizeIsAnErrorNotAHang) {
  REQUIRE_NTFS_FIXTURES();
  auto m = manifest();
  sendense::test::TempDir tmp;
  const std::string copy = tmp / "bitmap.img";
  std::string data = sendense::test::read_file(m["BAD_PART"]);
  auto le = [&](size_t off, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(data[off + static_cast<size_t>(i)]);
    return v;
  };
  ASSERT_EQ(data.compare(3, 8, "NTFS    "), 0);
  const uint64_t cluster = le(0x0b, 2) * le(0x0d, 1);
  const int8_t cpr = static_cast<int8_t>(le(0x40, 1));
  const uint64_t record_size = cpr > 0 ? cpr * cluster : uint64_t{1} << -cpr;
  const size_t rec = static_cast<size_t>(le(0x30, 8) * cluster + 6 * record_size);  // record 6: $Bitmap
  ASSERT_EQ(data.compare(rec, 4, "FILE"), 0);
  size_t attr = rec + le(rec + 0x14, 2);
  while (!(le(attr, 4) == 0x80 && data[attr + 8] == 1)) {  // its non-resident $DATA
    ASSERT_NE(le(attr, 4), 0xffffffffu) << "no non-resident $DATA in $Bitmap";
    attr += le(attr + 4, 4);
  }
  for (size_t field : {size_t{0x28}, size_t{0x30}})  // allocated and data size; initialized stays
    put_le(data, attr + field, uint64_t{1} << 38, 8);
  sendense::test::write_file(copy, data);
  FilesystemPtr f = sendense::open_filesystem(sendense::FsType::ntfs, sendense::open_raw_image(copy), "test/bitmap");
  std::string message;
  EXPECT_EQ(error_code([&] { f->statfs(); }, &message), EIO);
  EXPECT_NE(message.find("test/bitmap"), std::string::npos) << message;
  EXPECT_NE(message.find("$Bitmap"), std::string::npos) << message;
  EXPECT_EQ(read_all(*f, resolve(*f, "good.txt").ino, 4096), "still readable\n");
}

TEST(NtfsNames, Utf16ToUtf8) {
  auto conv = [](std::initializer_list<uint16_t> units) {
    std::string bytes;
    for (uint16_t u : units) {
      bytes.push_back(static_cast<char>(u & 0xff));
      bytes.push_back(static_cast<char>(u >> 8));
    }
    return sendense::ntfs::utf16le_to_utf8(bytes.data(), units.size());
  };
  EXPECT_EQ(conv({'a', 'B'}), "aB");
  EXPECT_EQ(conv({0xe9}), "\xc3\xa9");
  EXPECT_EQ(conv({0x65e5}), "\xe6\x97\xa5");
  EXPECT_EQ(conv({0xd83d, 0xdcc1}), "\xf0\x9f\x93\x81");                      // a pair
  EXPECT_EQ(conv({'a', 0xd800, 'b'}), "a\xef\xbf\xbd" "d800b");               // lone high
  EXPECT_EQ(conv({0xdc01}), "\xef\xbf\xbd" "dc01");                           // lone low
  EXPECT_EQ(conv({0xd800, 0xd800, 0xdc00}), "\xef\xbf\xbd" "d800\xf0\x90\x80\x80");
  EXPECT_EQ(conv({0xd800}), "\xef\xbf\xbd" "d800");                           // at the end
}

TEST(NtfsReparse, TargetsAsDocumented) {
  auto buffer = [](uint32_t tag, const std::u16string& sub, const std::u16string& print, uint32_t flags) {
    std::string data;
    auto put = [&](uint32_t v, int n) {
      for (int i = 0; i < n; ++i) data.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    };
    auto utf16 = [](const std::u16string& s) {
      std::string out;
      for (char16_t c : s) {
        out.push_back(static_cast<char>(c & 0xff));
        out.push_back(static_cast<char>(c >> 8));
      }
      return out;
    };
    const std::string s = utf16(sub), p = utf16(print);
    std::string body;
    data.clear();
    put(0, 2);
    put(static_cast<uint32_t>(s.size()), 2);
    put(static_cast<uint32_t>(s.size()), 2);
    put(static_cast<uint32_t>(p.size()), 2);
    if (tag == sendense::ntfs::kTagSymlink) put(flags, 4);
    body = data + s + p;
    data.clear();
    put(tag, 4);
    put(static_cast<uint32_t>(body.size()), 2);
    put(0, 2);
    return data + body;
  };
  using sendense::ntfs::parse_reparse;
  auto rel = parse_reparse(buffer(sendense::ntfs::kTagSymlink, u"..\\a\\b", u"..\\a\\b", 1));
  ASSERT_TRUE(rel && rel->symlink_target);
  EXPECT_EQ(*rel->symlink_target, "../a/b");
  auto abs = parse_reparse(buffer(sendense::ntfs::kTagSymlink, u"\\??\\C:\\x", u"", 0));
  ASSERT_TRUE(abs && abs->symlink_target);
  EXPECT_EQ(*abs->symlink_target, "C:/x");
  auto junction = parse_reparse(buffer(sendense::ntfs::kTagMountPoint, u"\\??\\D:\\data", u"D:\\data", 0));
  ASSERT_TRUE(junction && junction->symlink_target);
  EXPECT_EQ(*junction->symlink_target, "D:/data");
  // Names that do not fit the buffer: no target (the reader reports EIO).
  std::string truncated = buffer(sendense::ntfs::kTagSymlink, u"..\\a", u"..\\a", 1);
  truncated.resize(22);
  auto bad = parse_reparse(truncated);
  ASSERT_TRUE(bad);
  EXPECT_FALSE(bad->symlink_target);
  EXPECT_FALSE(parse_reparse(std::string(7, '\0')));
  // WSL symlink: tag, length, reserved, version 2, then the UTF-8 target.
  auto wsl = parse_reparse(std::string("\x1d\x00\x00\xa0\x0b\x00\x00\x00\x02\x00\x00\x00../x/\xc3\xa9", 19));
  ASSERT_TRUE(wsl && wsl->symlink_target);
  EXPECT_EQ(*wsl->symlink_target, "../x/\xc3\xa9");
  EXPECT_TRUE(sendense::ntfs::dataless_tag_name(0x9000601Au));  // a OneDrive placeholder
  EXPECT_FALSE(sendense::ntfs::dataless_tag_name(sendense::ntfs::kTagSymlink));
  EXPECT_EQ(sendense::ntfs::parse_interix_symlink(std::string("IntxLNK\1a\0/\0", 12)), "a/");
  EXPECT_FALSE(sendense::ntfs::parse_interix_symlink("IntxLNK\2"));
  // No target comes out absolute, whatever the data says (the host follows
  // symlinks of the mount): roots are dropped, UNC paths named "UNC".
  const std::pair<std::string, std::string> hostile[] = {
      {buffer(sendense::ntfs::kTagSymlink, u"\\??\\C:\\etc\\shadow", u"\\etc\\shadow", 0), "etc/shadow"},
      {buffer(sendense::ntfs::kTagSymlink, u"\\etc\\shadow", u"", 1), "etc/shadow"},
      {buffer(sendense::ntfs::kTagSymlink, u"\\\\?\\C:\\x", u"", 0), "C:/x"},
      {buffer(sendense::ntfs::kTagSymlink, u"x", u"\\\\srv\\share\\f", 0), "UNC/srv/share/f"},
      {buffer(sendense::ntfs::kTagSymlink, u"\\??\\UNC\\srv\\share", u"", 0), "UNC/srv/share"},
      {buffer(sendense::ntfs::kTagSymlink, u"//etc/shadow", u"", 1), "etc/shadow"},
      {buffer(sendense::ntfs::kTagSymlink, u"\\", u"\\", 0), "."},
      {buffer(sendense::ntfs::kTagMountPoint, u"\\??\\\\Windows", u"", 0), "Windows"},
      {buffer(sendense::ntfs::kTagMountPoint, u"x", u"/", 0), "."},
      {std::string("\x1d\x00\x00\xa0\x0f\x00\x00\x00\x02\x00\x00\x00/etc/shadow", 23), "etc/shadow"},
  };
  for (const auto& [data, want] : hostile) {
    auto r = parse_reparse(data);
    ASSERT_TRUE(r && r->symlink_target) << want;
    EXPECT_EQ(*r->symlink_target, want);
  }
  EXPECT_EQ(sendense::ntfs::parse_interix_symlink(std::string("IntxLNK\1/\0e\0", 12)), "e");
}

}  // namespace
