// XFS through the real daemon: the fixtures of tests/fixtures/make-xfs-fixtures.sh
// (CTest fixture `xfs_images`), a qcow2 backup whose GPT disk holds a v5 and
// a v4 XFS, and one holding an XFS copied with a dirty log. Checked with
// ordinary clients (rsync --checksum, find, cat, ls) against the source trees
// (their own XFS image, mounted read-only by the kernel for the test).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

using namespace std::chrono_literals;

std::string xfs_fixtures() { return SENDENSE_XFS_FIXTURES_DIR; }

// Partition byte offsets of a disk image, from sfdisk.
std::vector<uint64_t> partition_offsets(const std::string& disk) {
  std::vector<uint64_t> out;
  const std::string dump = run_ok("sfdisk -d " + q(disk));
  size_t at = 0;
  while ((at = dump.find("start=", at)) != std::string::npos) {
    at += 6;
    while (dump[at] == ' ') ++at;
    out.push_back(std::stoull(dump.substr(at)) * 512);
  }
  return out;
}

void flip_byte(const std::string& img, uint64_t offset) {
  const int fd = ::open(img.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  unsigned char b = 0;
  ASSERT_EQ(pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b ^= 0x5a;
  ASSERT_EQ(pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

class XfsDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = xfs_fixtures();
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("xfs fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env")) << "run `ctest -R xfs_fixtures` first";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    manifest_ = std::make_unique<Manifest>(fx_ + "/manifest.env");
    xfs_id_ = (*manifest_)["XFS_ID"];
    dirty_id_ = (*manifest_)["DIRTY_ID"];
    for (const char* key : {"XFS_IMAGE", "DIRTY_IMAGE"}) sums_before_ += sha256_of((*manifest_)[key]);

    src_ = tmp_ / "src";
    ASSERT_EQ(::mkdir(src_.c_str(), 0755), 0);
    CommandResult m = run("mount -t xfs -o loop,ro,norecovery,nouuid " + q(fx_ + "/src.img") + " " + q(src_));
    ASSERT_EQ(m.status, 0) << m.output;
    src_mounted_ = true;

    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    CommandResult r = cli("catalog import " + q(fx_ + "/repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
    ASSERT_EQ(daemon_->start({}), "");
  }

  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->stop(), "") << "stopping the daemon with SIGTERM";
      EXPECT_FALSE(is_mounted(mnt_)) << "mount left behind";
      const std::string log = daemon_->log();
      for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
        EXPECT_EQ(log.find(bad), std::string::npos) << "daemon log holds \"" << bad << "\"";
      if (HasFailure()) std::cerr << "---- daemon log ----\n" << log.substr(log.size() > 8000 ? log.size() - 8000 : 0);
    }
    if (src_mounted_) run("umount " + q(src_) + " || umount -l " + q(src_));
    if (manifest_) {
      std::string after;
      for (const char* key : {"XFS_IMAGE", "DIRTY_IMAGE"}) after += sha256_of((*manifest_)[key]);
      EXPECT_EQ(after, sums_before_) << "an image changed";
    }
  }

  CommandResult cli(const std::string& args) { return run(q(cli_binary()) + " " + args + " --catalog " + q(catalog_)); }
  std::string vol(const std::string& id, const std::string& v) const { return mnt_ + "/" + id + "/" + v; }

  // rsync sees nothing to do between the mounted volume and the source.
  void expect_rsync_clean(const std::string& actual, const std::string& source, const std::string& flags) {
    CommandResult r = run("rsync " + flags + " --dry-run --itemize-changes --checksum --delete " + q(actual + "/") +
                          " " + q(source + "/"));
    EXPECT_EQ(r.status, 0) << r.output.substr(0, 4000);
    EXPECT_EQ(r.output, "") << "rsync " << flags << " sees differences:\n" << r.output.substr(0, 4000);
  }

  TempDir tmp_;
  std::string fx_, src_, mnt_, catalog_, xfs_id_, dirty_id_, sums_before_;
  bool src_mounted_ = false;
  std::unique_ptr<Manifest> manifest_;
  std::unique_ptr<RestoreDaemon> daemon_;
};

TEST_F(XfsDaemonTest, V5VolumeMatchesSourceWithRsync) {
  const std::string part1 = vol(xfs_id_, "part1");
  // --modify-window=-1: mtimes to the nanosecond.
  expect_rsync_clean(part1, src_ + "/v5", "-aHAX --modify-window=-1");
  // The 100k-entry directory lists completely.
  EXPECT_EQ(trim(run_ok("cd " + q(part1 + "/dirs/huge") + " && find . | wc -l")),
            trim(run_ok("cd " + q(src_ + "/v5/dirs/huge") + " && find . | wc -l")));
  EXPECT_EQ(trim(run_ok("cd " + q(part1) + " && find . | wc -l")), trim(run_ok("cd " + q(src_ + "/v5") + " && find . | wc -l")));
  // Nanoseconds, bigtime, ACLs and a 60 KB remote xattr value as clients see them.
  EXPECT_EQ(run_ok("stat -c '%y %x' " + q(part1 + "/ns-time") + " " + q(part1 + "/future")),
            run_ok("stat -c '%y %x' " + q(src_ + "/v5/ns-time") + " " + q(src_ + "/v5/future")));
  EXPECT_EQ(run_ok("cd " + q(part1) + " && getfacl -n acl-file acl-dir"),
            run_ok("cd " + q(src_ + "/v5") + " && getfacl -n acl-file acl-dir"));
  EXPECT_EQ(run_ok("getfattr --only-values -n user.big " + q(part1 + "/xattr-big") + " | sha256sum"),
            run_ok("getfattr --only-values -n user.big " + q(src_ + "/v5/xattr-big") + " | sha256sum"));
  // Hard links share the inode number.
  EXPECT_EQ(trim(run_ok("stat -c %i " + q(part1 + "/hl/a/one"))), trim(run_ok("stat -c %i " + q(part1 + "/hl/b/two"))));
}

TEST_F(XfsDaemonTest, V4VolumeMatchesSource) {
  // mkfs.xfs -p fills a v4 filesystem without times or xattrs: compare the rest.
  expect_rsync_clean(vol(xfs_id_, "part2"), src_ + "/v4", "-rlpgoDH");
  EXPECT_EQ(trim(run_ok("cd " + q(vol(xfs_id_, "part2")) + " && find . | wc -l")),
            trim(run_ok("cd " + q(src_ + "/v4") + " && find . | wc -l")));
}

TEST_F(XfsDaemonTest, DirtyLogSnapshotIsBrowsableAndReported) {
  const std::string part1 = vol(dirty_id_, "part1");
  CommandResult r = run("rsync -aHAX --modify-window=-1 --dry-run --itemize-changes --checksum --exclude=/written-after " +
                        q(part1 + "/") + " " + q(src_ + "/dirty/"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "");
  EXPECT_TRUE(wait_for([&] { return daemon_->log().find("xfs_log") != std::string::npos; }, 5s));
  const std::string log = daemon_->log();
  EXPECT_NE(log.find("state=skipped"), std::string::npos) << "the dirty log is not reported";
  EXPECT_NE(log.find("XFS log not replayed"), std::string::npos);
}

TEST_F(XfsDaemonTest, DamagedVolumeLeavesTheOthersWorking) {
  // A raw copy of the backup disk: part1 (v5) gets a damaged superblock,
  // part2 (v4) a damaged directory block.
  const std::string disk = tmp_ / "damaged.raw";
  run_ok("qemu-img convert -f qcow2 -O raw " + q((*manifest_)["XFS_IMAGE"]) + " " + q(disk));
  const std::vector<uint64_t> parts = partition_offsets(disk);
  ASSERT_EQ(parts.size(), 2u);
  flip_byte(disk, parts[0] + 88);  // sb_agcount: CRC mismatch
  const std::string v4 = fx_ + "/v4.img";
  const std::string stack = run_ok("xfs_db -r -c 'path /dirs/leaf' -c stack " + q(v4));
  const uint64_t ino = std::stoull(stack.substr(stack.find("\tinode ") + 7));
  const std::string bmap = run_ok("xfs_db -r -c " + q("inode " + std::to_string(ino)) + " -c bmap " + q(v4));
  const std::string fsb = std::to_string(std::stoull(bmap.substr(bmap.find("startblock ") + 11)));
  const std::string conv = run_ok("xfs_db -r -c " + q("convert fsb " + fsb + " byte") + " " + q(v4));
  flip_byte(disk, parts[1] + std::stoull(conv.substr(conv.find('(') + 1)));
  ASSERT_EQ(cli("catalog add --id xfs-damaged --format raw --vm damaged --time 2026-03-01T00:00:00Z --path " + q(disk))
                .status, 0);

  // The daemon notices the new catalog entry within its refresh interval.
  EXPECT_TRUE(wait_for([&] { return file_exists(mnt_ + "/xfs-damaged"); }, 15s));
  const std::string listing = run_ok("ls " + q(mnt_ + "/xfs-damaged"));
  EXPECT_EQ(listing.find("part1"), std::string::npos) << listing;
  EXPECT_NE(listing.find("part2"), std::string::npos) << listing;
  CommandResult ls = run("ls " + q(mnt_ + "/xfs-damaged/part2/dirs/leaf"));
  EXPECT_NE(ls.status, 0);
  EXPECT_NE(ls.output.find("Input/output error"), std::string::npos) << ls.output;
  EXPECT_EQ(run_ok("cat " + q(mnt_ + "/xfs-damaged/part2/small.txt")), read_file(src_ + "/v4/small.txt"));
  EXPECT_EQ(run_ok("ls " + q(mnt_ + "/xfs-damaged/part2/dirs/node") + " | wc -l"), "3000\n");
  // The other backup is untouched by all this.
  EXPECT_EQ(run_ok("cat " + q(vol(xfs_id_, "part1") + "/small.txt")), read_file(src_ + "/v5/small.txt"));
  const std::string log = daemon_->log();
  EXPECT_NE(log.find("volume_failed"), std::string::npos);
  EXPECT_NE(log.find("bad XFS superblock"), std::string::npos);
}

}  // namespace
}  // namespace sendense::test
