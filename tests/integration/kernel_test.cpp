// The kernel attach backend through the real daemon: the fixtures of
// tests/fixtures/make-kernel-fixtures.sh (CTest fixture `kernel_images`), a
// GPT disk with ext4, XFS and btrfs (raw and qcow2) and a crash-consistent
// ext4, served with --attach kernel|auto|userspace and checked with ordinary
// clients (rsync --checksum, find, getfattr, sha256sum) against the source
// tree, e2fsck's result, and the userspace backend. Needs root, loop devices,
// qemu-storage-daemon and ext4/XFS/btrfs in the kernel.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

using namespace std::chrono_literals;

std::string kernel_fixtures() { return SENDENSE_KERNEL_FIXTURES_DIR; }

// Every trace the kernel backend can leave under `base`: mounts (incl. the
// qemu-storage-daemon export), loop devices over files there, qemu processes.
std::string leftovers(const std::string& base) {
  std::string out;
  for (const auto& e : read_mountinfo())
    if (e.mount_point.rfind(base + "/", 0) == 0) out += "mount " + e.mount_point + "\n";
  const CommandResult loops = run("losetup -a -O NAME,BACK-FILE --noheadings");
  std::istringstream in(loops.output);
  std::string line;
  while (std::getline(in, line))
    if (line.find(base + "/") != std::string::npos) out += "loop " + line + "\n";
  const CommandResult procs = run("pgrep -af qemu-storage-daemon || true");
  std::istringstream pin(procs.output);
  while (std::getline(pin, line))
    if (line.find(base + "/") != std::string::npos) out += "process " + line + "\n";
  return out;
}

class KernelDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = kernel_fixtures();
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("kernel fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env")) << "run `ctest -R kernel_fixtures` first";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    SENDENSE_REQUIRE_TOOL("qemu-storage-daemon");
    SENDENSE_REQUIRE_TOOL("rsync");
    manifest_ = std::make_unique<Manifest>(fx_ + "/manifest.env");
    for (const char* key : {"RAW_IMAGE", "QCOW_IMAGE", "JOURNAL_IMAGE"}) sums_before_ += sha256_of((*manifest_)[key]);
    // A staging base of our own: a daemon serving this host is never touched.
    staging_ = tmp_ / "staging";
    ASSERT_EQ(::setenv("SENDENSE_STAGING_BASE", staging_.c_str(), 1), 0);
  }

  void TearDown() override {
    for (auto& d : daemons_)
      if (d && d->running()) {
        EXPECT_EQ(d->stop(), "") << read_file(d->log_path());
      }
    daemons_.clear();
    if (!staging_.empty()) {
      EXPECT_EQ(leftovers(staging_), "");
    }
    if (manifest_) {
      std::string after;
      for (const char* key : {"RAW_IMAGE", "QCOW_IMAGE", "JOURNAL_IMAGE"}) after += sha256_of((*manifest_)[key]);
      EXPECT_EQ(after, sums_before_) << "an image was modified";
    }
    ::unsetenv("SENDENSE_STAGING_BASE");
  }

  // A daemon on its own mount point and catalog (the fixture repo imported).
  RestoreDaemon& start_daemon(const std::string& name, const std::vector<std::string>& args) {
    const std::string mnt = tmp_ / ("mnt-" + name);
    const std::string catalog = tmp_ / (name + ".db");
    ::mkdir(mnt.c_str(), 0755);
    if (!file_exists(catalog)) {
      CommandResult r = run(q(cli_binary()) + " catalog import " + q(fx_ + "/repo") + " --catalog " + q(catalog));
      EXPECT_EQ(r.status, 0) << r.output;
    }
    daemons_.push_back(std::make_unique<RestoreDaemon>(mnt, catalog, tmp_ / (name + ".log")));
    const std::string started = daemons_.back()->start(args);
    EXPECT_EQ(started, "") << read_file(tmp_ / (name + ".log"));
    mounts_[daemons_.back().get()] = mnt;
    catalogs_[daemons_.back().get()] = catalog;
    return *daemons_.back();
  }
  std::string mnt(const RestoreDaemon& d) { return mounts_[&d]; }
  std::string status_json(const RestoreDaemon& d) {
    return run_ok(q(cli_binary()) + " status --json --catalog " + q(catalogs_[&d]));
  }

  void expect_rsync_clean(const std::string& actual, const std::string& expected) {
    CommandResult r = run(rsync_compare_command(actual, expected, true));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, "") << actual << " differs from " << expected;
  }

  std::string listing(const std::string& dir) {
    return run_ok("cd " + q(dir) + " && find . -printf '%P %i %m %U %G %s %T@ %y\\n' | LC_ALL=C sort");
  }
  std::string xattr_dump(const std::string& dir) {
    // Per file in name order: the two XFS readers list a folder in different orders.
    return run_ok("cd " + q(dir) + " && find . -print0 | LC_ALL=C sort -z | xargs -0 getfattr -h -d -m - "
                  "--absolute-names 2>/dev/null | grep -v '^$' || true");
  }

  TempDir tmp_;
  std::string fx_;
  std::string staging_;
  std::unique_ptr<Manifest> manifest_;
  std::string sums_before_;
  std::vector<std::unique_ptr<RestoreDaemon>> daemons_;
  std::map<const RestoreDaemon*, std::string> mounts_;
  std::map<const RestoreDaemon*, std::string> catalogs_;
};

TEST_F(KernelDaemonTest, Ext4XfsBtrfsEqualTheSourceThroughTheKernel) {
  RestoreDaemon& d = start_daemon("kernel", {"--attach", "kernel"});
  for (const char* key : {"RAW_ID", "QCOW_ID"}) {
    const std::string backup = mnt(d) + "/" + (*manifest_)[key];
    for (const char* part : {"part1", "part2", "part3"}) {
      SCOPED_TRACE(std::string(key) + "/" + part);
      expect_rsync_clean(backup + "/" + part, fx_ + "/src");
    }
  }
  const std::string status = status_json(d);
  EXPECT_NE(status.find("\"backend\": \"kernel\""), std::string::npos) << status;
  EXPECT_EQ(status.find("\"backend\": \"userspace\""), std::string::npos) << status;
  EXPECT_NE(status.find("\"attach_mode\": \"kernel\""), std::string::npos) << status;
  // Staging mounts are ro,nosuid,nodev,noexec.
  int staged = 0;
  for (const auto& e : read_mountinfo()) {
    if (e.mount_point.rfind(staging_ + "/", 0) != 0 || e.fs_type == "fuse") continue;
    ++staged;
    for (const char* opt : {"ro", "nosuid", "nodev", "noexec"})
      EXPECT_NE(("," + e.mount_options + ",").find(std::string(",") + opt + ","), std::string::npos)
          << e.mount_point << " " << e.mount_options;
  }
  EXPECT_EQ(staged, 6);
  // A guest symlink to /etc is a symlink, not the host's /etc.
  const std::string part1 = mnt(d) + "/" + (*manifest_)["RAW_ID"] + "/part1";
  EXPECT_EQ(run_ok("readlink " + q(part1 + "/abs-link")), "/etc\n");
  EXPECT_FALSE(file_exists(part1 + "/docs/up-link/etc/passwd"));
}

TEST_F(KernelDaemonTest, BothBackendsShowTheSameTree) {
  RestoreDaemon& user = start_daemon("user", {"--attach", "userspace"});
  RestoreDaemon& kern = start_daemon("kern", {"--attach", "kernel"});
  const std::string id = (*manifest_)["QCOW_ID"];
  for (const char* part : {"part1", "part2"}) {
    SCOPED_TRACE(part);
    const std::string a = mnt(user) + "/" + id + "/" + part;
    const std::string b = mnt(kern) + "/" + id + "/" + part;
    const std::string la = listing(a);
    EXPECT_GT(la.size(), 100u);
    EXPECT_EQ(la, listing(b));
    EXPECT_EQ(run_ok(checksums_command(a, false)), run_ok(checksums_command(b, false)));
    const std::string xa = xattr_dump(a);
    EXPECT_NE(xa.find("user.colour=\"blue\""), std::string::npos) << xa;
    EXPECT_EQ(xa, xattr_dump(b));
    expect_rsync_clean(a, b);
  }
}

TEST_F(KernelDaemonTest, AutoServesBtrfsThroughTheKernelAndTheRestInUserspace) {
  RestoreDaemon& d = start_daemon("auto", {});
  const std::string backup = mnt(d) + "/" + (*manifest_)["RAW_ID"];
  expect_rsync_clean(backup + "/part3", fx_ + "/src");
  expect_rsync_clean(backup + "/part1", fx_ + "/src");
  const std::string status = status_json(d);
  EXPECT_NE(status.find("\"backend\": \"kernel\""), std::string::npos) << status;
  EXPECT_NE(status.find("\"backend\": \"userspace\""), std::string::npos) << status;
  const std::string text = run_ok(q(cli_binary()) + " status --catalog " + q(catalogs_[&d]));
  EXPECT_NE(text.find("part3:btrfs[kernel]"), std::string::npos) << text;
  EXPECT_NE(text.find("part1:ext4,"), std::string::npos) << text;
}

TEST_F(KernelDaemonTest, JournalIsReplayedIntoAThrowawayOverlay) {
  RestoreDaemon& d = start_daemon("journal", {"--attach", "kernel"});
  const std::string ref = tmp_ / "ref";
  ASSERT_EQ(::mkdir(ref.c_str(), 0755), 0);
  CommandResult m = run("mount -o loop,ro,noload " + q((*manifest_)["JOURNAL_REFERENCE"]) + " " + q(ref));
  ASSERT_EQ(m.status, 0) << m.output;
  const std::string disk = mnt(d) + "/" + (*manifest_)["JOURNAL_ID"] + "/disk";
  EXPECT_TRUE(file_exists(disk + "/saved/file-20.txt"));
  expect_rsync_clean(disk, ref);
  run("umount " + q(ref));
  const std::string status = status_json(d);
  EXPECT_NE(status.find("by the kernel into a throwaway overlay"), std::string::npos) << status;
}

TEST_F(KernelDaemonTest, NoReplayShowsTheJournalledVolumeAsStored) {
  RestoreDaemon& d = start_daemon("noreplay", {"--attach", "kernel", "--no-replay"});
  const std::string disk = mnt(d) + "/" + (*manifest_)["JOURNAL_ID"] + "/disk";
  run_ok("ls " + q(disk));
  // The files written after the last checkpoint live only in the journal.
  EXPECT_FALSE(file_exists(disk + "/saved/file-20.txt"));
  const std::string status = status_json(d);
  EXPECT_NE(status.find("\"state\": \"skipped\""), std::string::npos) << status;
}

TEST_F(KernelDaemonTest, MaxMountsEvictsTheIdleBackupAndItsStagingMounts) {
  RestoreDaemon& d = start_daemon("evict", {"--attach", "kernel", "--max-mounts", "1"});
  const std::string raw = mnt(d) + "/" + (*manifest_)["RAW_ID"];
  const std::string qcow = mnt(d) + "/" + (*manifest_)["QCOW_ID"];
  auto staged_mounts = [&] {
    int n = 0;
    for (const auto& e : read_mountinfo())
      if (e.mount_point.rfind(staging_ + "/", 0) == 0) ++n;
    return n;
  };
  run_ok("ls " + q(raw + "/part1"));
  EXPECT_EQ(staged_mounts(), 4);  // the export and three volumes
  run_ok("ls " + q(qcow + "/part2"));
  EXPECT_EQ(staged_mounts(), 4) << "the first backup was not evicted";
  EXPECT_NE(read_file(d.log_path()).find("evict"), std::string::npos);
  // The kernel backend is the exception to "nothing pins" (restore_tree.h):
  // an open file keeps its backup, so the next attach finds nothing idle.
  {
    std::ifstream held(qcow + "/part2/docs/readme.txt");
    ASSERT_TRUE(held.good());
    CommandResult busy = run("ls " + q(raw + "/part1"));
    EXPECT_NE(busy.status, 0) << busy.output;
    EXPECT_NE(read_file(d.log_path()).find("busy"), std::string::npos);
  }
}

TEST_F(KernelDaemonTest, KillNineThenRestartLeavesNothingBehind) {
  RestoreDaemon& d = start_daemon("crash", {"--attach", "kernel"});
  for (const char* key : {"RAW_ID", "QCOW_ID", "JOURNAL_ID"}) run_ok("ls " + q(mnt(d) + "/" + (*manifest_)[key]) + "/*");
  d.kill_hard();
  EXPECT_NE(leftovers(staging_).find("mount "), std::string::npos) << "a crash should leave mounts for the restart";
  run("umount -l " + q(mnt(d)));
  ASSERT_EQ(d.start({"--attach", "kernel"}), "") << read_file(d.log_path());
  EXPECT_EQ(leftovers(staging_), "");
  EXPECT_NE(read_file(d.log_path()).find("reconciled_mount"), std::string::npos);
  // And it serves again.
  expect_rsync_clean(mnt(d) + "/" + (*manifest_)["RAW_ID"] + "/part2", fx_ + "/src");
}

// The nbd provider (qemu-nbd --connect on the restore pool). This machine
// class (CI) has no nbd module: the test says so loudly and is skipped.
TEST_F(KernelDaemonTest, NbdProviderEqualsTheSource) {
  if (!file_exists("/sys/block/nbd0")) SENDENSE_SKIP_HOST_LACKS("the nbd module (/dev/nbd0)");
  RestoreDaemon& d = start_daemon("nbd", {"--attach", "kernel", "--nbd-devices", "0-3"});
  const std::string backup = mnt(d) + "/" + (*manifest_)["QCOW_ID"];
  for (const char* part : {"part1", "part2", "part3"}) expect_rsync_clean(backup + "/" + part, fx_ + "/src");
  bool on_nbd = false;
  for (const auto& e : read_mountinfo())
    if (e.mount_point.rfind(staging_ + "/", 0) == 0 && e.fs_type != "fuse") on_nbd = true;
  EXPECT_TRUE(on_nbd);
  const std::string journal = mnt(d) + "/" + (*manifest_)["JOURNAL_ID"] + "/disk";
  run_ok("ls " + q(journal));
  EXPECT_NE(status_json(d).find("no overlay"), std::string::npos);  // read-only device: not replayed
  EXPECT_EQ(d.stop(), "");
  for (int n = 0; n <= 3; ++n) EXPECT_FALSE(file_exists("/sys/block/nbd" + std::to_string(n) + "/pid")) << n;
}

}  // namespace
}  // namespace sendense::test
