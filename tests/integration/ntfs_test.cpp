// NTFS through the real daemon on a real FUSE mount: the Windows-like
// backups made by tests/fixtures/make-ntfs-fixtures.sh, imported with the
// CLI, read with real clients (rsync, getfattr, stat, cp, cat).
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

std::string ntfs_fixtures() { return SENDENSE_NTFS_FIXTURES_DIR; }
class NtfsDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = ntfs_fixtures();
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("NTFS fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env")) << "run `ctest -R make_ntfs_fixtures` first";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    SENDENSE_REQUIRE_TOOL("rsync");
    SENDENSE_REQUIRE_TOOL("getfattr");
    manifest_ = std::make_unique<Manifest>(fx_ + "/manifest.env");
    src_ = m("SRC");
    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    CommandResult r = cli("catalog import " + q(fx_ + "/repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    sums_before_ = image_sums();
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
  }

  void TearDown() override {
    if (!daemon_) return;
    // The kernel sends RELEASE for a closed file asynchronously; one more
    // request makes the daemon take the queued releases before SIGTERM (an
    // OpenFile whose RELEASE never arrives is not freed by the FUSE layer at
    // shutdown and LeakSanitizer reports it: see the report to the lead).
    if (daemon_->running()) run("stat -f " + q(mnt_) + " > /dev/null");  // statfs is never cached
    EXPECT_EQ(daemon_->stop(), "") << "stopping the daemon with SIGTERM";
    EXPECT_FALSE(is_mounted(mnt_)) << "mount left behind";
    const std::string log = daemon_->log();
    for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
      EXPECT_EQ(log.find(bad), std::string::npos) << "daemon log holds \"" << bad << "\"";
    EXPECT_EQ(image_sums(), sums_before_) << "an image changed";
    // SENDENSE_TEST_LOG_DIR=DIR keeps every test's daemon log as DIR/<test>.log.
    if (const char* keep = std::getenv("SENDENSE_TEST_LOG_DIR"); keep && *keep) {
      const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
      run("mkdir -p " + q(keep) + " && cp " + q(daemon_->log_path()) + " " +
          q(std::string(keep) + "/" + info->test_suite_name() + "." + info->name() + ".log"));
    }
    if (HasFailure()) std::cerr << "---- daemon log ----\n" << log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
  }

  std::string image_sums() { return run("cd " + q(fx_ + "/repo") + " && find . -type f | sort | xargs sha256sum").output; }
  std::string m(const std::string& key) const { return (*manifest_)[key]; }
  CommandResult cli(const std::string& args) { return run(q(cli_binary()) + " " + args + " --catalog " + q(catalog_)); }
  void start(const std::vector<std::string>& args = {}) { ASSERT_EQ(daemon_->start(args), "") << "starting the daemon"; }
  std::string main_volume() const { return mnt_ + "/" + m("WIN01_ID") + "/" + m("WIN01_NTFS_VOLUME"); }

  TempDir tmp_;
  std::string fx_, mnt_, catalog_, src_, sums_before_;
  std::unique_ptr<Manifest> manifest_;
  std::unique_ptr<RestoreDaemon> daemon_;
};

TEST_F(NtfsDaemonTest, RsyncSeesNothingToDoAgainstTheFilesWritten) {
  start();
  // Times, content, symlinks, and owners/permissions (the default mapping:
  // root, 0755 folders, 0644 files, as the fixture's umask 022 made them).
  CommandResult r = run("rsync -rltpgo --checksum --itemize-changes --dry-run --exclude=/special/ " +
                        q(main_volume() + "/") + " " + q(src_ + "/"));
  EXPECT_EQ(r.status, 0) << r.output.substr(0, 4000);
  EXPECT_EQ(r.output, "") << "rsync sees differences";
  // Nothing missing on our side either.
  CommandResult back = run("rsync -rlt --checksum --itemize-changes --dry-run " + q(src_ + "/") + " " +
                           q(main_volume() + "/") + " 2>&1 | grep -v 'Read-only file system' | head -20");
  EXPECT_EQ(back.output, "") << "the mount lacks something the source has";
}

TEST_F(NtfsDaemonTest, StreamsAttributesModesLinksAndCopies) {
  start();
  const std::string v = main_volume();
  // Alternate data streams, as getfattr shows the source's user xattrs.
  for (const char* rel : {"streams/with-streams.txt", "frag/fragmented.bin", "streams/plain.txt"}) {
    SCOPED_TRACE(rel);
    const std::string dump = " | grep -v '^# file:'";
    EXPECT_EQ(run("cd " + q(v) + " && getfattr -d -m '^user\\.' " + q(rel) + dump).output,
              run("cd " + q(src_) + " && getfattr -d -m '^user\\.' " + q(rel) + dump).output);
  }
  CommandResult crtime = run("getfattr --absolute-names --only-values -n system.ntfs_crtime " + q(v + "/docs/readme.txt") + " | wc -c");
  EXPECT_EQ(trim(crtime.output), "8") << "8-byte NTFS creation time";
  CommandResult attrib = run("getfattr --absolute-names -e hex -n system.ntfs_attrib " + q(v + "/compressed/numbers.txt"));
  EXPECT_NE(attrib.output.find("system.ntfs_attrib=0x"), std::string::npos) << attrib.output;
  EXPECT_NE(run("getfattr --absolute-names -e hex -n system.ntfs_acl " + q(v + "/docs/readme.txt")).output.find("=0x01"),
            std::string::npos);

  EXPECT_EQ(trim(run_ok("stat -c '%a %u %g %F' " + q(v + "/docs"))), "755 0 0 directory");
  EXPECT_EQ(trim(run_ok("stat -c '%a %u %g %F' " + q(v + "/docs/readme.txt"))), "644 0 0 regular file");
  EXPECT_EQ(trim(run_ok("stat -c '%a %F' " + q(v + "/links/relative-link"))), "777 symbolic link");
  EXPECT_EQ(trim(run_ok("readlink " + q(v + "/reparse/junction"))), trim(run_ok("readlink " + q(src_ + "/reparse/junction"))));

  const std::string a = trim(run_ok("stat -c %i " + q(v + "/hardlinks/a.txt")));
  EXPECT_EQ(trim(run_ok("stat -c %i " + q(v + "/hardlinks/b.txt"))), a);
  EXPECT_EQ(trim(run_ok("stat -c %i " + q(v + "/hardlinks/other/c.txt"))), a);
  EXPECT_EQ(trim(run_ok("stat -c %h " + q(v + "/hardlinks/a.txt"))), "3");

  for (const char* rel : {"large-64MiB.bin", "compressed/mixed.bin", "sparse/sparse.bin", "frag/fragmented.bin"}) {
    SCOPED_TRACE(rel);
    CommandResult cp = run("cp " + q(v + "/" + rel) + " " + q(tmp_ / "copy") + " && cmp " + q(tmp_ / "copy") + " " +
                           q(src_ + "/" + rel));
    EXPECT_EQ(cp.status, 0) << cp.output;
  }
  EXPECT_EQ(trim(run("ls " + q(v + "/big-dir") + " | wc -l").output), "5200");
  CommandResult dedup = run("cat " + q(v + "/special/deduplicated.dat"));
  EXPECT_NE(dedup.status, 0);
  EXPECT_NE(dedup.output.find("Input/output error"), std::string::npos) << dedup.output;
  EXPECT_NE(run("stat -f -c '%S %b' " + q(v)).output, "");
}

TEST_F(NtfsDaemonTest, OwnershipAndModesAreConfigurable) {
  start({"--ntfs-uid", "1234", "--ntfs-gid", "4321", "--ntfs-dir-mode", "750", "--ntfs-file-mode", "640"});
  const std::string v = main_volume();
  EXPECT_EQ(trim(run_ok("stat -c '%a %u %g' " + q(v + "/docs"))), "750 1234 4321");
  EXPECT_EQ(trim(run_ok("stat -c '%a %u %g' " + q(v + "/docs/readme.txt"))), "640 1234 4321");
}

TEST_F(NtfsDaemonTest, DirtyHibernatedAndDamagedVolumes) {
  start();
  // Dirty + hibernated: browsable as stored, said in the log.
  const std::string dirty = mnt_ + "/" + m("WIN02_ID") + "/part1";
  EXPECT_EQ(read_file(dirty + "/before-crash.txt"), "written before the crash\n");
  EXPECT_NE(daemon_->log().find("ntfs_unclean"), std::string::npos);
  EXPECT_NE(daemon_->log().find("$LogFile not replayed"), std::string::npos);

  // Damaged: clear errors for the bad files, the rest readable; the volume
  // whose $MFT is gone is left out with a log line.
  const std::string bad = mnt_ + "/" + m("WIN03_ID");
  EXPECT_EQ(read_file(bad + "/part1/good.txt"), "still readable\n");
  for (const char* name : {"bad-record.txt", "bad-fixup.bin", "bad-runlist.bin"}) {
    CommandResult r = run("cat " + q(bad + "/part1/" + name) + " > /dev/null");
    EXPECT_NE(r.status, 0) << name;
    EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << name << ": " << r.output;
  }
  CommandResult encrypted = run("cat " + q(bad + "/part1/encrypted.bin") + " > /dev/null");
  EXPECT_NE(encrypted.output.find("Permission denied"), std::string::npos) << encrypted.output;
  EXPECT_EQ(trim(run("ls " + q(bad + "/part1/far")).output), "near.txt");
  CommandResult far = run("stat " + q(bad + "/part1/far/far-away.txt"));
  EXPECT_NE(far.output.find("Input/output error"), std::string::npos) << far.output;
  EXPECT_FALSE(file_exists(bad + "/part2"));
  EXPECT_NE(daemon_->log().find("volume_failed"), std::string::npos);
  // Everything else keeps working.
  EXPECT_EQ(read_file(bad + "/part1/good.txt"), "still readable\n");
  EXPECT_EQ(read_file(main_volume() + "/docs/readme.txt"), read_file(src_ + "/docs/readme.txt"));
}

}  // namespace
}  // namespace sendense::test
