// The pass-through Filesystem over a host folder (the kernel backend's
// staging mount): metadata as the host stats it, data, xattrs, and above all
// that no guest symlink or ".." ever leads outside the root.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <fstream>

#include "readers/common/error.h"
#include "readers/fs/passthrough/passthrough_filesystem.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using test::TempDir;

struct stat lstat_of(const std::string& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st;
}

class PassthroughTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = dir / "root";
    ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((root + "/d").c_str(), 0750), 0);
    test::write_file(root + "/d/f.txt", "hello passthrough\n");
    test::write_file(dir / "outside", "secret outside the root\n");
    ASSERT_EQ(::link((root + "/d/f.txt").c_str(), (root + "/hard").c_str()), 0);
    ASSERT_EQ(::symlink("/etc", (root + "/etc-link").c_str()), 0);
    ASSERT_EQ(::symlink("../../../../..", (root + "/d/up").c_str()), 0);
    ASSERT_EQ(::symlink("../outside", (root + "/out").c_str()), 0);
    if (::setxattr((root + "/d/f.txt").c_str(), "user.colour", "blue", 4, 0) == 0) have_user_xattrs = true;
    fs = open_passthrough_filesystem(root, "test", "backup/part1");
  }

  // Looks `path` up component by component, as the FUSE layer does.
  std::optional<Attr> walk(const std::string& path) {
    uint64_t cur = fs->root_ino();
    std::optional<Attr> a = fs->getattr(cur);
    size_t pos = 0;
    while (pos < path.size()) {
      size_t end = path.find('/', pos);
      if (end == std::string::npos) end = path.size();
      a = fs->lookup(cur, path.substr(pos, end - pos));
      if (!a) return a;
      cur = a->ino;
      pos = end + 1;
    }
    return a;
  }

  TempDir dir;
  std::string root;
  FilesystemPtr fs;
  bool have_user_xattrs = false;
};

TEST_F(PassthroughTest, MetadataIsTheHostsWithRealInodeNumbers) {
  for (const std::string p : {"d", "d/f.txt", "hard", "etc-link", "d/up"}) {
    const auto a = walk(p);
    ASSERT_TRUE(a) << p;
    const struct stat st = lstat_of(root + "/" + p);
    EXPECT_EQ(a->ino, st.st_ino) << p;
    EXPECT_EQ(a->mode, st.st_mode) << p;
    EXPECT_EQ(a->nlink, st.st_nlink) << p;
    EXPECT_EQ(a->size, static_cast<uint64_t>(st.st_size)) << p;
    EXPECT_EQ(a->mtime.tv_sec, st.st_mtim.tv_sec) << p;
    EXPECT_EQ(a->mtime.tv_nsec, st.st_mtim.tv_nsec) << p;
    EXPECT_EQ(a->ctime.tv_nsec, st.st_ctim.tv_nsec) << p;
    const Attr again = fs->getattr(a->ino);
    EXPECT_EQ(again.ino, a->ino);
  }
  EXPECT_EQ(fs->root_ino(), lstat_of(root).st_ino);
  EXPECT_EQ(walk("hard")->ino, walk("d/f.txt")->ino);
  EXPECT_FALSE(fs->lookup(fs->root_ino(), "missing"));
}

TEST_F(PassthroughTest, ReaddirGivesHostInodesAndDots) {
  const auto d = walk("d");
  const auto entries = fs->readdir(d->ino);
  std::map<std::string, uint64_t> by_name;
  for (const auto& e : entries) by_name[e.name] = e.ino;
  EXPECT_EQ(by_name.size(), 4u);  // . .. f.txt up
  EXPECT_EQ(by_name["."], d->ino);
  EXPECT_EQ(by_name[".."], fs->root_ino());
  EXPECT_EQ(by_name["f.txt"], lstat_of(root + "/d/f.txt").st_ino);
  EXPECT_EQ(by_name["up"], lstat_of(root + "/d/up").st_ino);
  // Inodes learned by readdir alone can be asked about.
  EXPECT_EQ(fs->getattr(by_name["f.txt"]).size, 18u);
}

TEST_F(PassthroughTest, ReadsData) {
  const auto f = walk("d/f.txt");
  const uint64_t h = fs->open(f->ino);
  std::vector<std::byte> buf(64);
  const size_t n = fs->read(h, 6, buf);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(buf.data()), n), "passthrough\n");
  fs->release(h);
  EXPECT_THROW(fs->open(walk("d")->ino), Error);
}

TEST_F(PassthroughTest, SymlinksAreReturnedAsStoredAndNeverFollowed) {
  const auto etc = walk("etc-link");
  ASSERT_TRUE(etc);
  EXPECT_TRUE(S_ISLNK(etc->mode));
  EXPECT_EQ(fs->readlink(etc->ino), "/etc");
  // Looking inside the symlink must not reach the host's /etc.
  try {
    EXPECT_FALSE(fs->lookup(etc->ino, "passwd"));
  } catch (const Error&) {
  }
  EXPECT_THROW(fs->readdir(etc->ino), Error);
  EXPECT_THROW(fs->open(etc->ino), Error);
  const auto up = walk("d/up");
  EXPECT_EQ(fs->readlink(up->ino), "../../../../..");
  EXPECT_THROW(fs->readdir(up->ino), Error);
  const auto out = walk("out");
  EXPECT_THROW(fs->open(out->ino), Error);
}

TEST_F(PassthroughTest, DotDotStaysBeneathTheRoot) {
  const uint64_t r = fs->root_ino();
  EXPECT_EQ(fs->lookup(r, "..")->ino, r);
  EXPECT_EQ(fs->lookup(walk("d")->ino, "..")->ino, r);
  EXPECT_FALSE(fs->lookup(r, "../outside"));
  EXPECT_FALSE(fs->lookup(r, "d/f.txt"));
}

TEST_F(PassthroughTest, SwappingAFolderForASymlinkDoesNotEscape) {
  const auto f = walk("d/f.txt");
  // Replace d by a symlink to the folder holding "outside" with a file of the same name.
  ASSERT_EQ(::rename((root + "/d").c_str(), (dir / "moved").c_str()), 0);
  ASSERT_EQ(::symlink(dir.path().c_str(), (root + "/d").c_str()), 0);
  EXPECT_THROW(fs->getattr(f->ino), Error);
  EXPECT_THROW(fs->open(f->ino), Error);
}

TEST_F(PassthroughTest, Xattrs) {
  if (!have_user_xattrs) SENDENSE_SKIP("the temporary folder's filesystem has no user xattrs");
  const auto f = walk("d/f.txt");
  const auto names = fs->listxattr(f->ino);
  EXPECT_NE(std::find(names.begin(), names.end(), "user.colour"), names.end());
  EXPECT_EQ(fs->getxattr(f->ino, "user.colour"), "blue");
  EXPECT_FALSE(fs->getxattr(f->ino, "user.none"));
  // A symlink's xattrs are its own, not its target's.
  const auto link = walk("etc-link");
  EXPECT_NO_THROW(fs->listxattr(link->ino));
  EXPECT_FALSE(fs->getxattr(link->ino, "user.colour"));
}

TEST_F(PassthroughTest, Statfs) {
  const FsStat s = fs->statfs();
  EXPECT_GT(s.block_size, 0u);
  EXPECT_GT(s.blocks, 0u);
}

}  // namespace
}  // namespace sendense
