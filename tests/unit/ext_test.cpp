// The ext2/3/4 reader against real images made by mkfs.ext4 -d from a source
// tree generated here; everything reachable through the Filesystem is
// compared with lstat/readlink/getxattr/content of the source.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/fs/ext/ext_cache_stats.h"
#include "readers/fs/ext/ext_filesystem.h"
#include "readers/common/shared_lru.h"
#include "readers/volume/volume.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using sendense::Attr;
using sendense::Error;
using sendense::Filesystem;
using sendense::FilesystemPtr;
using sendense::test::run;
using sendense::test::run_ok;
using sendense::test::shell_quote;
using sendense::test::TempDir;

namespace {

const std::string kLongTarget = [] {
  std::string s;
  for (int i = 0; i < 30; ++i) s += "dir" + std::to_string(i) + "/";
  return s + "target";  // > 60 bytes: a slow symlink
}();

std::string q(const fs::path& p) { return shell_quote(p.string()); }

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string pseudo_random(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

// The source tree every image is made from.
void make_source(const fs::path& src) {
  fs::create_directories(src / "sub" / "deeper");
  write_bytes(src / "small.txt", "hello, ext\n");
  write_bytes(src / "empty", "");
  write_bytes(src / "medium.bin", pseudo_random(100'003, 1));
  run_ok("head -c 3145728 /dev/urandom > " + q(src / "random.bin"));
  // Several data regions with holes between them: more than one extent.
  const std::string multi = q(src / "multi.bin");
  run_ok("head -c 70000 /dev/urandom | dd of=" + multi + " bs=1 seek=0 conv=notrunc status=none");
  for (const char* seek : {"1M", "2500K", "4M"})
    run_ok("head -c 300000 /dev/urandom | dd of=" + multi + " bs=64K iflag=fullblock oflag=seek_bytes seek=" +
           seek + " conv=notrunc status=none");
  // Sparse: a big hole with a write in the middle.
  run_ok("truncate -s 10M " + q(src / "sparse.bin") + " && printf middle | dd of=" + q(src / "sparse.bin") +
         " bs=1 seek=5000000 conv=notrunc status=none");
  write_bytes(src / "sub" / "inner.txt", "inner\n");
  write_bytes(src / "with space name", "spaces\n");
  write_bytes(src / "ünïcødé-名前.txt", "utf8\n");
  // Hard links.
  fs::create_hard_link(src / "small.txt", src / "hard1");
  fs::create_hard_link(src / "medium.bin", src / "sub" / "hard2");
  // Symlinks: relative, absolute, dangling, long (slow).
  fs::create_symlink("small.txt", src / "rel-link");
  fs::create_symlink("/etc/passwd", src / "abs-link");
  fs::create_symlink("no/such/target", src / "dangling-link");
  fs::create_symlink(kLongTarget, src / "long-link");
  run_ok("mkfifo " + q(src / "fifo"));
  run_ok("mknod " + q(src / "null-dev") + " c 1 3");
  run_ok("mknod " + q(src / "big-dev") + " b 259 70000");  // the new (large) device encoding
  // Owners, including ids above 16 bits.
  run_ok("chown 1234:5678 " + q(src / "small.txt"));
  run_ok("chown 100000:200000 " + q(src / "medium.bin"));
  run_ok("chmod 4750 " + q(src / "sub" / "inner.txt"));
  // Extended attributes and ACLs.
  run_ok("setfattr -n user.x -v 'value with spaces' " + q(src / "small.txt"));
  run_ok("setfattr -n trusted.y -v 0x00ff01 " + q(src / "small.txt"));
  run_ok("setfattr -n user.empty " + q(src / "empty"));
  run_ok("setfacl -m u:1234:r " + q(src / "medium.bin"));
  run_ok("setfacl -d -m u:1234:rx " + q(src / "sub"));
  // 5000 entries: an htree directory.
  fs::create_directories(src / "big");
  for (int i = 0; i < 5000; ++i) write_bytes(src / "big" / ("entry-" + std::to_string(i)), i % 100 ? "" : "x");
  // Times with nanoseconds and past 2038 (set last: creating entries changes the parent's mtime).
  run_ok("touch -h -d '2021-03-04 05:06:07.123456789' " + q(src / "small.txt") + " " + q(src / "rel-link"));
  run_ok("touch -d '2100-01-01 00:00:00.5' " + q(src / "sub" / "inner.txt"));
  run_ok("touch -d '1960-06-01 12:00:00.25' " + q(src / "empty"));
}

// mkfs -d copies seconds only (1.47.0); write the source's exact mtimes into
// the image with debugfs so nanoseconds and the epoch bits are compared too.
void copy_mtimes(const fs::path& src, const fs::path& image, const fs::path& scratch) {
  std::ofstream cmds(scratch);
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator(); ++it) {
    struct stat st {};
    ASSERT_EQ(::lstat(it->path().c_str(), &st), 0);
    const int64_t sec = st.st_mtim.tv_sec;
    const uint32_t epoch = static_cast<uint32_t>((sec - static_cast<int32_t>(static_cast<uint32_t>(sec))) >> 32) & 3;
    const uint32_t extra = (static_cast<uint32_t>(st.st_mtim.tv_nsec) << 2) | epoch;
    const std::string rel = "/" + it->path().lexically_relative(src).string();  // fs::relative follows symlinks
    cmds << "sif \"" << rel << "\" mtime " << "@" << sec << "\n";
    cmds << "sif \"" << rel << "\" mtime_extra " << extra << "\n";
  }
  cmds.close();
  run_ok("debugfs -w -f " + q(scratch) + " " + q(image) + " >/dev/null 2>&1");
}

struct Variant {
  std::string label;
  std::string mkfs_options;
  std::string type;
  std::string fixup;  // debugfs commands run on the image after mkfs
};

std::ostream& operator<<(std::ostream& os, const Variant& v) { return os << v.label; }

class Source {
 public:
  Source() {
    src_ = dir_ / "src";
    fs::create_directories(src_);
    make_source(src_);
  }
  const fs::path& src() const { return src_; }
  fs::path scratch(const std::string& name) const { return dir_ / name; }

  // Makes an image of the source; returns its path.
  fs::path make_image(const std::string& options, const std::string& name, const std::string& size = "64M") const {
    const fs::path image = dir_ / name;
    run_ok("mkfs.ext4 -q -F -I 256 " + options + " -d " + q(src_) + " " + q(image) + " " + size);
    copy_mtimes(src_, image, dir_ / (name + ".cmds"));
    return image;
  }

 private:
  TempDir dir_;
  fs::path src_;
};

std::string read_all(Filesystem& f, uint64_t ino, size_t chunk) {
  const uint64_t h = f.open(ino);
  std::string out;
  std::vector<std::byte> buf(chunk);
  for (;;) {
    const size_t n = f.read(h, out.size(), buf);
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(buf.data()), n);
  }
  f.release(h);
  return out;
}

// Equality without printing megabytes on failure.
::testing::AssertionResult same_bytes(const std::string& got, const std::string& want) {
  if (got == want) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size() << ", first difference at "
                                       << i;
}

std::map<std::string, std::string> source_xattrs(const fs::path& p) {
  std::map<std::string, std::string> out;
  std::vector<char> names(65536);
  const ssize_t n = ::llistxattr(p.c_str(), names.data(), names.size());
  if (n <= 0) return out;
  for (const char* name = names.data(); name < names.data() + n; name += std::strlen(name) + 1) {
    std::vector<char> value(65536);
    const ssize_t len = ::lgetxattr(p.c_str(), name, value.data(), value.size());
    if (len >= 0) out[name] = std::string(value.data(), static_cast<size_t>(len));
  }
  return out;
}

struct Walk {
  Filesystem& f;
  std::map<ino_t, uint64_t> hard_links;  // source inode -> image inode
  size_t files = 0;
  size_t bytes = 0;

  void compare_entry(const fs::path& path, const Attr& a) {
    SCOPED_TRACE(path.string());
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_EQ(a.mode, st.st_mode);
    EXPECT_EQ(a.uid, st.st_uid);
    EXPECT_EQ(a.gid, st.st_gid);
    EXPECT_EQ(a.mtime.tv_sec, st.st_mtim.tv_sec);
    EXPECT_EQ(a.mtime.tv_nsec, st.st_mtim.tv_nsec);
    EXPECT_EQ(a.nlink, st.st_nlink);
    if (!S_ISDIR(st.st_mode)) { EXPECT_EQ(a.size, static_cast<uint64_t>(st.st_size)); }
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) { EXPECT_EQ(a.rdev, st.st_rdev); }
    if (st.st_nlink > 1 && !S_ISDIR(st.st_mode)) {
      auto [it, inserted] = hard_links.emplace(st.st_ino, a.ino);
      if (!inserted) { EXPECT_EQ(it->second, a.ino) << "hard links must share an inode"; }
    }
    EXPECT_EQ(f.getattr(a.ino).ino, a.ino);
    if (S_ISLNK(st.st_mode)) { EXPECT_EQ(f.readlink(a.ino), fs::read_symlink(path).string()); }
    if (S_ISREG(st.st_mode)) {
      const std::string expected = file_bytes(path);
      ASSERT_TRUE(same_bytes(read_all(f, a.ino, 128 * 1024), expected));
      if (!expected.empty()) {
        EXPECT_TRUE(same_bytes(read_all(f, a.ino, 4093), expected));
        check_odd_reads(a.ino, expected);
        if (expected.size() > 4096) { EXPECT_GT(a.blocks, 0u); }
      }
      EXPECT_LE(a.blocks * 512, static_cast<uint64_t>(st.st_size) + 1024 * 1024);  // holes stay holes
      ++files;
      bytes += expected.size();
    }
    // Extended attributes: the same names and values (ACLs in VFS format).
    std::map<std::string, std::string> want = source_xattrs(path);
    std::vector<std::string> names = f.listxattr(a.ino);
    std::set<std::string> got_names(names.begin(), names.end());
    std::set<std::string> want_names;
    for (auto& [k, v] : want) want_names.insert(k);
    EXPECT_EQ(got_names, want_names);
    for (auto& [k, v] : want) EXPECT_EQ(f.getxattr(a.ino, k), v) << k;
    EXPECT_EQ(f.getxattr(a.ino, "user.no-such-attribute"), std::nullopt);
    EXPECT_EQ(f.getxattr(a.ino, "system.data"), std::nullopt);
  }

  void check_odd_reads(uint64_t ino, const std::string& expected) {
    const uint64_t h = f.open(ino);
    std::mt19937 gen(static_cast<uint32_t>(ino));
    for (int i = 0; i < 20; ++i) {
      const uint64_t offset = gen() % (expected.size() + 10);
      const size_t len = 1 + gen() % 70001;
      std::vector<std::byte> buf(len);
      const size_t n = f.read(h, offset, buf);
      const size_t want = offset >= expected.size() ? 0 : std::min<size_t>(len, expected.size() - offset);
      ASSERT_EQ(n, want) << "offset " << offset << " len " << len;
      if (n) { ASSERT_EQ(std::memcmp(buf.data(), expected.data() + offset, n), 0) << "offset " << offset; }
    }
    f.release(h);
  }

  void compare_dir(const fs::path& dir, uint64_t ino, bool root) {
    std::set<std::string> want{".", ".."};
    for (const auto& e : fs::directory_iterator(dir)) want.insert(e.path().filename().string());
    if (root) want.insert("lost+found");
    std::set<std::string> got;
    for (const auto& e : f.readdir(ino)) {
      EXPECT_TRUE(got.insert(e.name).second) << "duplicate " << e.name;
      if (e.name == "." || e.name == ".." || e.name == "lost+found") continue;
      struct stat st {};
      ASSERT_EQ(::lstat((dir / e.name).c_str(), &st), 0) << e.name;
      EXPECT_EQ(e.type, st.st_mode & S_IFMT) << e.name;
    }
    EXPECT_EQ(got, want) << dir;
    EXPECT_EQ(f.lookup(ino, "no-such-name"), std::nullopt);
    EXPECT_EQ(f.lookup(ino, ".")->ino, ino);
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      std::optional<Attr> a = f.lookup(ino, name);
      ASSERT_TRUE(a.has_value()) << e.path();
      compare_entry(e.path(), *a);
      if (S_ISDIR(a->mode)) {
        EXPECT_EQ(f.lookup(a->ino, "..")->ino, ino);
        compare_dir(e.path(), a->ino, false);
      }
    }
  }
};

class ExtImage : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    SENDENSE_REQUIRE_TOOL("mkfs.ext4");
    SENDENSE_REQUIRE_TOOL("debugfs");
    SENDENSE_REQUIRE_TOOL("setfattr");
    SENDENSE_REQUIRE_TOOL("setfacl");
    if (::geteuid() != 0) SENDENSE_SKIP("needs root (mknod, trusted.* xattrs, chown)");
    source_ = std::make_unique<Source>();
    image_ = source_->make_image(GetParam().mkfs_options, "image.raw");
    if (!GetParam().fixup.empty()) run_ok("debugfs -w -R " + shell_quote(GetParam().fixup) + " " + q(image_) + " 2>&1");
  }
  std::unique_ptr<Source> source_;
  fs::path image_;
};

TEST_P(ExtImage, EverythingMatchesTheSource) {
  const std::string before = sendense::test::sha256_of(image_);
  FilesystemPtr f = sendense::open_ext_filesystem(sendense::open_raw_image(image_), "backup-x/part1");
  EXPECT_EQ(f->type_name(), GetParam().type);
  EXPECT_EQ(f->root_ino(), 2u);
  Walk walk{*f, {}, 0, 0};
  walk.compare_dir(source_->src(), f->root_ino(), true);
  EXPECT_GT(walk.files, 5000u);

  // The ACL as getfattr shows it on the source.
  const uint64_t medium = f->lookup(2, "medium.bin")->ino;
  std::string hex = run_ok("getfattr -n system.posix_acl_access -e hex --only-values " +
                           q(source_->src() / "medium.bin") + " 2>/dev/null | od -An -tx1 | tr -d ' \\n'");
  std::string got_hex;
  const std::optional<std::string> acl = f->getxattr(medium, "system.posix_acl_access");
  ASSERT_TRUE(acl.has_value());
  for (unsigned char c : *acl) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", c);
    got_hex += b;
  }
  EXPECT_EQ(got_hex, hex);

  // Misuse and absent things.
  EXPECT_THROW(f->open(2), Error);
  try {
    f->open(2);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EISDIR);
  }
  try {
    f->readdir(medium);
    ADD_FAILURE() << "readdir of a file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ENOTDIR);
  }
  try {
    f->getattr(1u << 30);
    ADD_FAILURE() << "getattr of a bad inode";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ENOENT);
  }
  EXPECT_THROW(f->read(12345, 0, {}), Error);

  sendense::FsStat st = f->statfs();
  EXPECT_GT(st.blocks, st.blocks_free);
  EXPECT_GT(st.files, st.files_free);
  EXPECT_EQ(st.blocks * st.block_size, 64u << 20);

  f.reset();
  EXPECT_EQ(sendense::test::sha256_of(image_), before) << "the image must never be written";
}

TEST_P(ExtImage, ConcurrentReadsFrom8Threads) {
  FilesystemPtr f = sendense::open_ext_filesystem(sendense::open_raw_image(image_), "backup-x/part1");
  std::vector<std::pair<uint64_t, std::string>> files;
  for (const char* name : {"random.bin", "medium.bin", "multi.bin", "sparse.bin", "small.txt"})
    files.emplace_back(f->lookup(2, name)->ino, file_bytes(source_->src() / name));
  const uint64_t big = f->lookup(2, "big")->ino;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      try {
        std::mt19937 gen(static_cast<uint32_t>(t));
        for (int round = 0; round < 3; ++round) {
          for (const auto& [ino, want] : files) {
            if (read_all(*f, ino, 4096 * static_cast<size_t>(t + 1) + 7) != want) ++failures;
          }
          for (int i = 0; i < 200; ++i) {
            const int n = static_cast<int>(gen() % 5000);
            auto a = f->lookup(big, "entry-" + std::to_string(n));
            if (!a || a->size != (n % 100 ? 0u : 1u)) ++failures;
          }
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Variants, ExtImage,
                         ::testing::Values(Variant{"ext4", "-t ext4", "ext4", ""},
                                           Variant{"ext4_no_extents", "-t ext4 -O ^extent,^64bit", "ext4", ""},
                                           Variant{"ext4_inline_data", "-t ext4 -O inline_data", "ext4",
                                                   // mke2fs 1.47.0 -d drops a trailing hole with inline_data
                                                   "sif /sparse.bin size 10485760"},
                                           Variant{"ext3", "-t ext3", "ext3", ""},
                                           Variant{"ext2", "-t ext2", "ext2", ""}),
                         [](const auto& param_info) { return param_info.param.label; });

// ---- damaged images: detected, never a crash ----

class DamagedImage : public ::testing::Test {
 protected:
  void SetUp() override {
    SENDENSE_REQUIRE_TOOL("mkfs.ext4");
    SENDENSE_REQUIRE_TOOL("debugfs");
    SENDENSE_REQUIRE_TOOL("dd");
    if (::geteuid() != 0) SENDENSE_SKIP("needs root (mknod, trusted.* xattrs, chown)");
    source_ = std::make_unique<Source>();
  }

  void expect_open_fails(const fs::path& image, const std::string& expected_text) {
    try {
      sendense::open_ext_filesystem(sendense::open_raw_image(image), "backup-x/part1");
      ADD_FAILURE() << "a damaged image opened";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), EIO) << e.what();
      EXPECT_NE(std::string(e.what()).find("backup-x/part1"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(expected_text), std::string::npos) << e.what();
    }
  }

  // Visits everything; each call either answers or throws Error.
  void walk_everything(Filesystem& f, uint64_t dir, int depth, size_t& errors) {
    if (depth > 8) return;
    std::vector<sendense::DirEntry> entries;
    try {
      entries = f.readdir(dir);
    } catch (const Error&) {
      ++errors;
      return;
    }
    for (const auto& e : entries) {
      if (e.name == "." || e.name == "..") continue;
      try {
        std::optional<Attr> a = f.lookup(dir, e.name);
        if (!a) continue;
        f.listxattr(a->ino);
        f.getxattr(a->ino, "user.x");
        f.getxattr(a->ino, "system.posix_acl_access");
        if (S_ISDIR(a->mode)) walk_everything(f, a->ino, depth + 1, errors);
        if (S_ISLNK(a->mode)) f.readlink(a->ino);
        if (S_ISREG(a->mode)) {
          const uint64_t h = f.open(a->ino);
          std::vector<std::byte> buf(256 * 1024);
          for (uint64_t off = 0; off < std::min<uint64_t>(a->size, 64u << 20); off += buf.size()) f.read(h, off, buf);
          f.release(h);
        }
      } catch (const Error&) {
        ++errors;
      }
    }
  }

  std::unique_ptr<Source> source_;
};

TEST_F(DamagedImage, BadSuperblockMagic) {
  fs::path image = source_->make_image("-t ext4", "magic.raw");
  run_ok("printf '\\000\\000' | dd of=" + q(image) + " bs=1 seek=1080 conv=notrunc status=none");
  expect_open_fails(image, "bad magic number");
}

TEST_F(DamagedImage, TruncatedImage) {
  fs::path image = source_->make_image("-t ext4", "short.raw");
  run_ok("truncate -s 20M " + q(image));
  expect_open_fails(image, "does not fit");
  run_ok("truncate -s 2000 " + q(image));
  expect_open_fails(image, "");
}

TEST_F(DamagedImage, GarbageGroupDescriptors) {
  fs::path image = source_->make_image("-t ext2", "gdt.raw");
  // 1 KiB blocks: the descriptors start at block 2.
  run_ok("head -c 1024 /dev/urandom | dd of=" + q(image) + " bs=1024 seek=2 conv=notrunc status=none");
  expect_open_fails(image, "");
}

// Corrupts the inode table of group 0 (root, lost+found and the first files)
// with `pattern` and walks everything.
void corrupt_inode_table(const Source& source, const std::string& options, const std::string& pattern) {
  fs::path image = source.make_image(options, "itable.raw");
  std::string out = run_ok("debugfs -R 'imap <12>' " + q(image) + " 2>/dev/null");
  const size_t at = out.find("located at block ");
  ASSERT_NE(at, std::string::npos) << out;
  const uint64_t block = std::stoull(out.substr(at + 17));
  // 64 KiB from inode 12's block on: files, symlinks, devices, "sub", "big".
  run_ok("head -c 65536 " + pattern + " | dd of=" + q(image) + " bs=1024 seek=" + std::to_string(block) +
         " conv=notrunc status=none");
  FilesystemPtr f;
  try {
    f = sendense::open_ext_filesystem(sendense::open_raw_image(image), "backup-x/part1");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO);
    return;
  }
  size_t errors = 0;
  for (uint64_t ino = 1; ino < 200; ++ino) {
    try {
      Attr a = f->getattr(ino);
      if (S_ISLNK(a.mode)) f->readlink(ino);
      if (S_ISREG(a.mode)) {
        uint64_t h = f->open(ino);
        std::vector<std::byte> buf(1 << 20);
        f->read(h, a.size > buf.size() ? a.size - buf.size() : 0, buf);
        f->read(h, 0, buf);
        f->release(h);
      }
      if (S_ISDIR(a.mode)) f->readdir(ino);
      f->listxattr(ino);
    } catch (const Error& e) {
      ++errors;
      if (e.code() == EIO) {
        EXPECT_NE(std::string(e.what()).find("backup-x/part1"), std::string::npos) << e.what();
      }
    }
  }
  EXPECT_GT(errors, 0u);
}

TEST_F(DamagedImage, ZeroedInodeTableExt4) { corrupt_inode_table(*source_, "-t ext4", "/dev/zero"); }
TEST_F(DamagedImage, GarbageInodeTableExt4) { corrupt_inode_table(*source_, "-t ext4", "/dev/urandom"); }
// No checksums on ext2: the garbage reaches the reader's own checks.
TEST_F(DamagedImage, GarbageInodeTableExt2) { corrupt_inode_table(*source_, "-t ext2", "/dev/urandom"); }
TEST_F(DamagedImage, GarbageInodeTableExt4NoExtents) {
  corrupt_inode_table(*source_, "-t ext4 -O ^extent,^64bit,^metadata_csum", "/dev/urandom");
}

TEST_F(DamagedImage, WalkAfterGarbageInDirectoryAndExtentBlocks) {
  fs::path image = source_->make_image("-t ext4 -O ^metadata_csum", "blocks.raw");
  // Garbage over a stretch of metadata after the inode tables: directory
  // blocks (the htree) and whatever else lives there.
  std::string out = run_ok("debugfs -R 'blocks /big' " + q(image) + " 2>/dev/null");
  const uint64_t first = std::stoull(out);
  run_ok("head -c 16384 /dev/urandom | dd of=" + q(image) + " bs=1024 seek=" + std::to_string(first) +
         " conv=notrunc status=none");
  FilesystemPtr f = sendense::open_ext_filesystem(sendense::open_raw_image(image), "backup-x/part1");
  size_t errors = 0;
  walk_everything(*f, 2, 0, errors);
  SUCCEED() << errors << " errors";
}

// A guest sets i_size/i_size_high to anything: a size past off_t is an
// error naming the inode (the kernel would refuse the attributes), the
// folder still lists, and its other files still read.
TEST_F(DamagedImage, ASizeNoFileCanHaveIsAnErrorNamingItsInode) {
  fs::path image = source_->make_image("-t ext4", "size.raw");
  run_ok("debugfs -w -R 'sif /small.txt size 0xfffffffffffffff0' " + q(image) + " 2>/dev/null");
  FilesystemPtr f = sendense::open_ext_filesystem(sendense::open_raw_image(image), "backup-x/part1");
  uint64_t ino = 0;  // listed still: the folder's entries carry no size
  for (const auto& e : f->readdir(f->root_ino()))
    if (e.name == "small.txt") ino = e.ino;
  ASSERT_NE(ino, 0u);
  for (int call = 0; call < 2; ++call) {
    try {
      if (call == 0) f->getattr(ino);
      else f->map_file(ino, 16);
      ADD_FAILURE() << "a size past off_t was given, call " << call;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), EIO) << e.what();
      EXPECT_NE(std::string(e.what()).find("larger than any file"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("inode " + std::to_string(ino)), std::string::npos) << e.what();
    }
  }
  // The other files still read whole and right.
  const auto medium = f->lookup(f->root_ino(), "medium.bin");
  ASSERT_TRUE(medium);
  EXPECT_EQ(medium->size, 100'003u);
  EXPECT_TRUE(same_bytes(read_all(*f, medium->ino, 128 * 1024), file_bytes(source_->src() / "medium.bin")));
}

// ---- hostile superblocks: refused before libext2fs sizes anything from them ----

// Little-endian field access on an image file.
void patch_le(const fs::path& image, uint64_t offset, uint64_t value, size_t bytes) {
  const int fd = ::open(image.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << image;
  unsigned char b[8];
  for (size_t i = 0; i < bytes; ++i) b[i] = static_cast<unsigned char>(value >> (8 * i));
  ASSERT_EQ(::pwrite(fd, b, bytes, static_cast<off_t>(offset)), static_cast<ssize_t>(bytes));
  ::close(fd);
}

uint64_t read_le(const fs::path& image, uint64_t offset, size_t bytes) {
  const int fd = ::open(image.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << image;
  unsigned char b[8] = {};
  EXPECT_EQ(::pread(fd, b, bytes, static_cast<off_t>(offset)), static_cast<ssize_t>(bytes));
  ::close(fd);
  uint64_t v = 0;
  for (size_t i = bytes; i-- > 0;) v = (v << 8) | b[i];
  return v;
}

// Superblock fields, as offsets into the image (the superblock is at 1024).
constexpr uint64_t kSb = 1024;
constexpr uint64_t kInodesCount = kSb + 0, kBlocksCountLo = kSb + 4, kFirstDataBlock = kSb + 20,
                   kLogBlockSize = kSb + 24, kLogClusterSize = kSb + 28, kBlocksPerGroup = kSb + 32,
                   kClustersPerGroup = kSb + 36, kInodesPerGroup = kSb + 40, kMagic = kSb + 56,
                   kInodeSize = kSb + 88, kDescSize = kSb + 254, kBlocksCountHi = kSb + 336;

struct SuperblockPatch {
  std::string label;
  std::vector<std::tuple<uint64_t, uint64_t, size_t>> fields;  // offset, value, bytes
  std::string expected_text;
};

std::ostream& operator<<(std::ostream& os, const SuperblockPatch& p) { return os << p.label; }

// One pristine image (1 KiB blocks, 64bit, 8192 blocks and 2048 inodes a
// group) per process; each case patches a copy.
class HostileSuperblock : public ::testing::TestWithParam<SuperblockPatch> {
 protected:
  static void SetUpTestSuite() {
    if (!sendense::test::have_tool("mkfs.ext4")) return;
    dir_ = new TempDir;
    pristine_ = fs::path(dir_->path()) / "pristine.raw";
    // No metadata_csum: a superblock checksum would stop libext2fs early, and
    // an attacker recomputes it anyway.
    run_ok("mkfs.ext4 -q -F -b 1024 -N 16384 -O 64bit,^metadata_csum " + q(pristine_) + " 64M");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static inline TempDir* dir_ = nullptr;
  static inline fs::path pristine_;
};

TEST_P(HostileSuperblock, RefusedQuicklyNamingTheVolume) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  // The shape the cases assume.
  ASSERT_EQ(read_le(pristine_, kLogBlockSize, 4), 0u);
  ASSERT_EQ(read_le(pristine_, kBlocksCountLo, 4), 65536u);
  ASSERT_EQ(read_le(pristine_, kBlocksPerGroup, 4), 8192u);
  ASSERT_EQ(read_le(pristine_, kInodesPerGroup, 4), 2048u);
  ASSERT_EQ(read_le(pristine_, kInodesCount, 4), 16384u);
  ASSERT_EQ(read_le(pristine_, kDescSize, 2), 64u);
  ASSERT_EQ(read_le(pristine_, kFirstDataBlock, 4), 1u);

  const fs::path image = fs::path(dir_->path()) / (GetParam().label + ".raw");
  fs::copy_file(pristine_, image, fs::copy_options::overwrite_existing);
  for (const auto& [offset, value, bytes] : GetParam().fields) patch_le(image, offset, value, bytes);
  const std::string device_size = std::to_string(fs::file_size(image));

  // Our own check's message (not libext2fs's) shows the superblock was
  // refused before ext2fs_open2 could allocate or read anything.
  try {
    sendense::open_ext_filesystem(sendense::open_raw_image(image), "backup-x/part1");
    ADD_FAILURE() << "a hostile superblock opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO) << e.what();
    EXPECT_NE(std::string(e.what()).find("backup-x/part1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(GetParam().expected_text), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fields, HostileSuperblock,
    ::testing::Values(
        SuperblockPatch{"magic", {{kMagic, 0x1234, 2}}, "bad magic number"},
        SuperblockPatch{"log_block_size_7", {{kLogBlockSize, 7, 4}, {kLogClusterSize, 7, 4}}, "block size"},
        SuperblockPatch{"log_block_size_huge", {{kLogBlockSize, 0xffffffff, 4}}, "block size"},
        // 64 KiB blocks: 64 GiB claimed on a 64 MiB device.
        SuperblockPatch{"log_block_size_6", {{kLogBlockSize, 6, 4}, {kLogClusterSize, 6, 4}}, "does not fit"},
        SuperblockPatch{"blocks_count_lo", {{kBlocksCountLo, 0xffffffff, 4}}, "does not fit"},
        SuperblockPatch{"blocks_count_hi", {{kBlocksCountHi, 1, 4}}, "does not fit"},
        SuperblockPatch{"blocks_count_zero", {{kBlocksCountLo, 0, 4}}, "does not fit"},
        SuperblockPatch{"blocks_per_group_zero", {{kBlocksPerGroup, 0, 4}}, "blocks per group"},
        SuperblockPatch{"blocks_per_group_too_big", {{kBlocksPerGroup, 8 * 1024 + 8, 4}}, "blocks per group"},
        SuperblockPatch{"inodes_per_group_zero", {{kInodesPerGroup, 0, 4}}, "inodes per group"},
        SuperblockPatch{"inodes_per_group_too_big", {{kInodesPerGroup, 8 * 1024 + 1, 4}}, "inodes per group"},
        SuperblockPatch{"inodes_count", {{kInodesCount, 16385, 4}}, "inodes count"},
        SuperblockPatch{"first_data_block", {{kFirstDataBlock, 65536, 4}}, "first data block"},
        SuperblockPatch{"desc_size_small", {{kDescSize, 32, 2}}, "group descriptor size"},
        SuperblockPatch{"desc_size_big", {{kDescSize, 2048, 2}}, "group descriptor size"},
        SuperblockPatch{"desc_size_odd", {{kDescSize, 96, 2}}, "group descriptor size"},
        SuperblockPatch{"inode_size_small", {{kInodeSize, 64, 2}}, "inode size"},
        SuperblockPatch{"inode_size_odd", {{kInodeSize, 384, 2}}, "inode size"},
        SuperblockPatch{"inode_size_over_block", {{kInodeSize, 2048, 2}}, "inode size"},
        // Consistent tiny groups (8 blocks, 1 inode each) with 1 KiB
        // descriptors: libext2fs would allocate and read a 8 MiB table for
        // a 64 MiB filesystem, 128 GiB for a 1 TiB thin disk.
        SuperblockPatch{"tiny_groups",
                        {{kBlocksPerGroup, 8, 4}, {kClustersPerGroup, 8, 4}, {kInodesPerGroup, 1, 4},
                         {kInodesCount, 8192, 4}, {kDescSize, 1024, 2}},
                        "blocks per group"},
        // Consistent groups of 128 blocks (mke2fs makes none under 256).
        SuperblockPatch{"small_groups",
                        {{kBlocksPerGroup, 128, 4}, {kClustersPerGroup, 128, 4}, {kInodesPerGroup, 1, 4},
                         {kInodesCount, 512, 4}},
                        "blocks per group"}),
    [](const auto& param_info) { return param_info.param.label; });

// Hostile superblocks on a 1 TiB sparse device (a thin VM disk with only the
// superblock written), refused by our check (its message) before libext2fs
// sizes anything from them. debugfs 1.47.0 on the first image fails only
// after trying to allocate 128 GiB.
struct ThinDiskCase {
  const char* label;
  uint32_t blocks_per_group;
  uint32_t inodes_count;
  uint32_t desc_size;
  const char* expected_text;
};

class HostileSuperblockThinDisk : public ::testing::TestWithParam<ThinDiskCase> {};

TEST_P(HostileSuperblockThinDisk, RefusedBeforeTheLibrarySizesAnything) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  const ThinDiskCase& c = GetParam();
  TempDir dir;
  const fs::path image = fs::path(dir.path()) / "thin.raw";
  run_ok("mkfs.ext4 -q -F -b 1024 -O 64bit,^metadata_csum " + q(image) + " 64M && truncate -s 1T " + q(image));
  patch_le(image, kBlocksCountLo, 1u << 30, 4);
  patch_le(image, kBlocksCountHi, 0, 4);
  patch_le(image, kBlocksPerGroup, c.blocks_per_group, 4);
  patch_le(image, kClustersPerGroup, c.blocks_per_group, 4);
  patch_le(image, kInodesPerGroup, 1, 4);
  patch_le(image, kInodesCount, c.inodes_count, 4);
  patch_le(image, kDescSize, c.desc_size, 2);
  try {
    sendense::open_ext_filesystem(sendense::open_raw_image(image), "backup-x/part1");
    ADD_FAILURE() << "a hostile superblock opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO) << e.what();
    EXPECT_NE(std::string(e.what()).find("backup-x/part1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.expected_text), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, HostileSuperblockThinDisk,
    ::testing::Values(
        // 2^27 groups of 8 blocks, 1 KiB descriptors: a 128 GiB table.
        ThinDiskCase{"tiny_groups", 8, 1u << 27, 1024, "blocks per group"},
        // 2^22 groups of 256 blocks, 128-byte descriptors: a 512 MiB table,
        // plausible shapes everywhere but the size.
        ThinDiskCase{"huge_table", 256, 1u << 22, 128, "descriptor table of"}),
    [](const auto& param_info) { return std::string(param_info.param.label); });

// ---- one ext classification, shared with volume detection ----

TEST(ExtClassification, ReaderAgreesWithDetection) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  TempDir dir;
  const std::pair<const char*, const char*> cases[] = {
      {"mkfs.ext2 -q -F", "ext2"},
      {"mkfs.ext3 -q -F", "ext3"},
      {"mkfs.ext4 -q -F", "ext4"},
      {"mkfs.ext2 -q -F -O extents", "ext4"},
      {"mkfs.ext4 -q -F -O ^has_journal,^extent,^flex_bg,^huge_file,^dir_nlink,^extra_isize,^64bit,"
       "^metadata_csum",
       "ext2"},
  };
  for (const auto& [cmd, want] : cases) {
    const std::string image = dir / "fs.raw";
    std::remove(image.c_str());
    run_ok(std::string(cmd) + " " + shell_quote(image) + " 8M");
    sendense::BlockDevicePtr dev = sendense::open_raw_image(image);
    EXPECT_STREQ(sendense::to_string(sendense::detect_filesystem(*dev)), want) << cmd;
    EXPECT_EQ(sendense::open_ext_filesystem(dev, "v")->type_name(), want) << cmd;
  }
  EXPECT_EQ(sendense::classify_ext(0, 0x0008, 0), sendense::FsType::unknown);  // journal_dev
  EXPECT_EQ(sendense::classify_ext(0x0004, 0x0002, 0x0001), sendense::FsType::ext3);
  EXPECT_EQ(sendense::classify_ext(0x0004, 0x0040, 0), sendense::FsType::ext4);  // extents
}

TEST(ExtClassification, ExternalJournalIsNotAFilesystem) {
  SENDENSE_REQUIRE_TOOL("mke2fs");
  TempDir dir;
  const std::string image = dir / "journal.raw";
  run_ok("mke2fs -q -F -O journal_dev -b 1024 " + shell_quote(image) + " 8M");
  sendense::BlockDevicePtr dev = sendense::open_raw_image(image);
  EXPECT_EQ(sendense::detect_filesystem(*dev), sendense::FsType::unknown);
  try {
    sendense::open_ext_filesystem(dev, "backup-x/part1");
    ADD_FAILURE() << "an external journal opened as a filesystem";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO) << e.what();
    EXPECT_NE(std::string(e.what()).find("external journal"), std::string::npos) << e.what();
  }
}

// ---- file maps: mapped once per file, shared by handles, bounded ----

TEST(SharedLru, BoundedByCountAndWeight) {
  sendense::ext::SharedLru<std::string> lru(4, 100);
  auto value = [](const std::string& s) { return std::make_shared<const std::string>(s); };
  for (uint64_t k = 0; k < 10; ++k) lru.insert(k, value(std::to_string(k)), 10);
  EXPECT_EQ(lru.stats().entries, 4u);
  EXPECT_EQ(lru.stats().weight, 40u);
  EXPECT_EQ(lru.find(5), nullptr);  // evicted, least recently used first
  ASSERT_NE(lru.find(6), nullptr);
  // Weight: 6 (just used) survives three heavy inserts that evict the rest.
  std::shared_ptr<const std::string> held = lru.find(7);
  lru.insert(20, value("a"), 30);
  lru.insert(21, value("b"), 30);
  EXPECT_LE(lru.stats().weight, 100u);
  EXPECT_NE(lru.find(6), nullptr);
  EXPECT_EQ(lru.find(8), nullptr);
  EXPECT_EQ(*held, "7");  // a held value outlives its eviction
  // Too heavy to keep: returned, not cached, nothing else evicted for it.
  const auto before = lru.stats();
  auto heavy = lru.insert(30, value("heavy"), 101);
  EXPECT_EQ(*heavy, "heavy");
  EXPECT_EQ(lru.find(30), nullptr);
  EXPECT_EQ(lru.stats().entries, before.entries);
  // A racing second insert gets the first value.
  auto first = lru.insert(40, value("first"), 1);
  EXPECT_EQ(lru.insert(40, value("second"), 1), first);
}

// erase() forgets a key (its weight too); a holder keeps the value, and a
// dropped value is freed after the cache unlocked (its destructor may use
// the cache: fuse/node_files.h closes files from there).
TEST(SharedLru, EraseForgetsTheKeyNotTheHeldValue) {
  struct Probe {
    sendense::ext::SharedLru<Probe>* lru;
    bool* freed;
    ~Probe() {
      lru->find(99);  // would deadlock if freed under the cache's lock
      *freed = true;
    }
  };
  sendense::ext::SharedLru<Probe> lru(2, 10);
  bool freed_a = false, freed_b = false, freed_c = false;
  auto a = lru.insert(1, std::make_shared<const Probe>(&lru, &freed_a), 4);
  lru.insert(2, std::make_shared<const Probe>(&lru, &freed_b), 4);
  lru.erase(1);
  EXPECT_EQ(lru.find(1), nullptr);
  EXPECT_EQ(lru.stats().weight, 4u);
  EXPECT_FALSE(freed_a);  // still held here
  a.reset();
  EXPECT_TRUE(freed_a);
  lru.erase(2);
  EXPECT_TRUE(freed_b);
  lru.insert(3, std::make_shared<const Probe>(&lru, &freed_c), 4);
  lru.insert(4, std::make_shared<const Probe>(&lru, &freed_c), 4);
  lru.insert(5, std::make_shared<const Probe>(&lru, &freed_c), 4);  // evicts 3
  EXPECT_TRUE(freed_c);
  lru.erase(42);  // unknown: nothing
  EXPECT_EQ(lru.stats().entries, 2u);
  // Freed before the cache itself goes: a Probe calls into it.
  lru.erase(4);
  lru.erase(5);
  EXPECT_EQ(lru.stats().entries, 0u);
}

class ExtFileMaps : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!sendense::test::have_tool("mkfs.ext4") || !sendense::test::have_tool("setfacl") || ::geteuid() != 0) return;
    source_ = new Source;
    image_ = source_->make_image("-t ext4", "maps.raw");
  }
  static void TearDownTestSuite() {
    delete source_;
    source_ = nullptr;
  }
  void SetUp() override {
    SENDENSE_REQUIRE_TOOL("mkfs.ext4");
    SENDENSE_REQUIRE_TOOL("setfacl");
    if (::geteuid() != 0) GTEST_SKIP() << "SKIPPED: needs root (mknod, trusted.* xattrs, chown)";
    ASSERT_NE(source_, nullptr);
  }
  static FilesystemPtr open_fs() { return sendense::open_ext_filesystem(sendense::open_raw_image(image_), "maps"); }
  static inline Source* source_ = nullptr;
  static inline fs::path image_;
};

TEST_F(ExtFileMaps, TwoHandlesOfOneFileShareOneMap) {
  FilesystemPtr f = open_fs();
  const uint64_t ino = f->lookup(2, "multi.bin")->ino;
  const std::string want = file_bytes(source_->src() / "multi.bin");
  const uint64_t h1 = f->open(ino);
  const uint64_t h2 = f->open(ino);
  EXPECT_NE(h1, h2);
  auto stats = sendense::ext::file_map_cache_stats(*f);
  EXPECT_EQ(stats.misses, 1u) << "the second open must not map the file again";
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.files, 1u);
  // Interleaved reads through both handles.
  std::string got1, got2;
  std::vector<std::byte> buf(65537);
  for (;;) {
    const size_t n1 = f->read(h1, got1.size(), buf);
    got1.append(reinterpret_cast<const char*>(buf.data()), n1);
    const size_t n2 = f->read(h2, got2.size(), std::span(buf).first(4099));
    got2.append(reinterpret_cast<const char*>(buf.data()), n2);
    if (n1 == 0 && n2 == 0) break;
  }
  EXPECT_TRUE(same_bytes(got1, want));
  EXPECT_TRUE(same_bytes(got2, want));
  f->release(h1);
  EXPECT_EQ(f->read(h2, 0, std::span(buf).first(100)), 100u);  // still valid
  f->release(h2);
  EXPECT_THROW(f->read(h2, 0, buf), Error);
  // Released files stay mapped: opening again costs nothing.
  EXPECT_TRUE(same_bytes(read_all(*f, ino, 1 << 20), want));
  stats = sendense::ext::file_map_cache_stats(*f);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.hits, 2u);
  // Opening a directory or a symlink is still refused, and caches nothing.
  EXPECT_THROW(f->open(2), Error);
  EXPECT_THROW(f->open(f->lookup(2, "rel-link")->ino), Error);
  EXPECT_EQ(sendense::ext::file_map_cache_stats(*f).files, 1u);
}

TEST_F(ExtFileMaps, ConcurrentOpensAndReadsFrom8Threads) {
  FilesystemPtr f = open_fs();  // a cold cache: the threads race to map
  std::vector<std::pair<uint64_t, std::string>> files;
  for (const char* name : {"random.bin", "medium.bin", "multi.bin", "sparse.bin", "small.txt", "empty"})
    files.emplace_back(f->lookup(2, name)->ino, file_bytes(source_->src() / name));
  const uint64_t big = f->lookup(2, "big")->ino;
  for (int i = 0; i < 100; ++i) {
    const std::string name = "entry-" + std::to_string(i * 7);
    files.emplace_back(f->lookup(big, name)->ino, file_bytes(source_->src() / "big" / name));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      try {
        std::mt19937 gen(static_cast<uint32_t>(t));
        for (int round = 0; round < 4; ++round) {
          // Handles held open across other opens of the same files.
          std::vector<uint64_t> held;
          for (size_t i = 0; i < files.size(); ++i) {
            const auto& [ino, want] = files[(i + static_cast<size_t>(t) * 13) % files.size()];
            held.push_back(f->open(ino));
            if (read_all(*f, ino, 4096 * static_cast<size_t>(t + 1) + 7) != want) ++failures;
          }
          for (int i = 0; i < 50; ++i) {
            const size_t k = gen() % held.size();
            const auto& [ino, want] = files[(k + static_cast<size_t>(t) * 13) % files.size()];
            const uint64_t offset = want.empty() ? 0 : gen() % want.size();
            std::vector<std::byte> buf(1 + gen() % 200000);
            const size_t n = f->read(held[k], offset, buf);
            if (n != std::min<size_t>(buf.size(), want.size() - offset) ||
                std::memcmp(buf.data(), want.data() + offset, n) != 0)
              ++failures;
          }
          for (uint64_t h : held) f->release(h);
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  const auto stats = sendense::ext::file_map_cache_stats(*f);
  EXPECT_EQ(stats.misses, files.size()) << "every file mapped exactly once";
  EXPECT_EQ(stats.files, files.size());
}

TEST_F(ExtFileMaps, OpeningManyFilesStaysBounded) {
  FilesystemPtr f = open_fs();
  const uint64_t big = f->lookup(2, "big")->ino;
  std::vector<uint64_t> inos;
  for (int i = 0; i < 5000; ++i) inos.push_back(f->lookup(big, "entry-" + std::to_string(i))->ino);
  for (size_t i = 0; i < inos.size(); ++i) {
    const uint64_t h = f->open(inos[i]);
    std::byte b[2];
    EXPECT_EQ(f->read(h, 0, b), i % 100 ? 0u : 1u);
    f->release(h);
  }
  auto stats = sendense::ext::file_map_cache_stats(*f);
  EXPECT_EQ(stats.misses, 5000u);
  EXPECT_LE(stats.files, 256u) << "the cache must stay bounded";
  EXPECT_GE(stats.files, 200u) << "but keep a useful number of files";
  EXPECT_LE(stats.weight, 4u << 20);
  // The most recent files are still mapped; the first ones were evicted and
  // are mapped again (correctly) when opened.
  f->release(f->open(inos.back()));
  EXPECT_EQ(sendense::ext::file_map_cache_stats(*f).misses, 5000u);
  EXPECT_EQ(read_all(*f, inos.front(), 10), "x");
  stats = sendense::ext::file_map_cache_stats(*f);
  EXPECT_EQ(stats.misses, 5001u);
  EXPECT_LE(stats.files, 256u);
}

// ---- unwritten (preallocated) extents ----

// fallocate leaves unwritten extents over blocks that may hold stale data
// (here: a deleted file's 0xAB bytes); they must read as zeros, only the
// range written after it as data. Made through the kernel on a loop device
// because mkfs.ext4 -d writes no unwritten extents.
TEST(ExtUnwritten, PreallocatedRangesReadAsZeros) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  SENDENSE_REQUIRE_TOOL("losetup");
  if (::geteuid() != 0) SENDENSE_SKIP("needs root (loop mount)");
  TempDir dir;
  const fs::path image = fs::path(dir.path()) / "unwritten.raw";
  const fs::path mnt = fs::path(dir.path()) / "mnt";
  fs::create_directories(mnt);
  run_ok("mkfs.ext4 -q -F -b 4096 " + q(image) + " 32M");
  auto loop = run("losetup -f --show " + q(image));
  if (loop.status != 0) SENDENSE_SKIP("no free loop device: " << loop.output);
  const std::string dev = loop.output.substr(0, loop.output.find('\n'));
  const std::string script =
      "set -e; mount " + dev + " " + q(mnt) + "; "
      "head -c 8M /dev/zero | tr '\\000' '\\253' > " + q(mnt / "stale") + "; sync; rm " + q(mnt / "stale") + "; sync; "
      "fallocate -l 8M " + q(mnt / "prealloc") + "; "
      "printf DATA | dd of=" + q(mnt / "prealloc") + " bs=1 seek=1048576 conv=notrunc status=none; "
      "sync; umount " + q(mnt);
  auto made = run(script);
  run("umount " + q(mnt) + " 2>/dev/null; losetup -d " + dev);
  ASSERT_EQ(made.status, 0) << made.output;
  // The test is only meaningful if the file really has unwritten extents.
  auto extents = run("debugfs -R 'ex /prealloc' " + q(image));
  ASSERT_NE(extents.output.find("Uninit"), std::string::npos) << extents.output;

  FilesystemPtr f = sendense::open_ext_filesystem(sendense::open_raw_image(image), "unwritten");
  auto attr = f->lookup(2, "prealloc");
  ASSERT_TRUE(attr);
  EXPECT_EQ(attr->size, 8u << 20);
  std::string expected(8u << 20, '\0');
  expected.replace(1048576, 4, "DATA");
  EXPECT_TRUE(same_bytes(read_all(*f, attr->ino, 65536), expected));
}

// ---- throughput, printed for the record ----

TEST(ExtPerformance, LargeFileReadThroughput) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  TempDir dir;
  const fs::path src = fs::path(dir.path()) / "src";
  fs::create_directories(src);
  run_ok("head -c 200M /dev/urandom > " + q(src / "large.bin"));
  const fs::path image = fs::path(dir.path()) / "large.raw";
  run_ok("mkfs.ext4 -q -F -b 4096 -d " + q(src) + " " + q(image) + " 256M");
  FilesystemPtr f = sendense::open_ext_filesystem(sendense::open_raw_image(image), "perf");
  const uint64_t ino = f->lookup(2, "large.bin")->ino;
  std::vector<std::byte> buf(1 << 20);
  for (int pass = 0; pass < 2; ++pass) {  // the first pass warms the page cache
    const auto start = std::chrono::steady_clock::now();
    const uint64_t h = f->open(ino);
    uint64_t total = 0;
    for (size_t n; (n = f->read(h, total, buf)) > 0;) total += n;
    f->release(h);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(total, 200u << 20);
    if (pass == 1) { EXPECT_TRUE(same_bytes(read_all(*f, ino, 1 << 20), file_bytes(src / "large.bin"))); }
    std::printf("pass %d: %.0f MiB/s (1 MiB reads, 200 MiB file)\n", pass, total / seconds / (1 << 20));
  }
}

}  // namespace
