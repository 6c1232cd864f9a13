// Integration tests: the real sendense-restorefs daemon serving the fixtures
// of tests/fixtures/make-fixtures.sh (CTest fixture `make_fixtures`) on a real
// FUSE mount, checked with ordinary tools (rsync, find, stat, sha256sum, cp).
//
// Every test gets a fresh mount point and catalog (the fixture repository
// imported with the CLI). After each test the daemon is stopped with SIGTERM
// and must exit 0 with its mount gone, its log must hold no sanitizer report,
// and the images must still have the checksums make-fixtures.sh recorded.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

using namespace std::chrono_literals;


class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = fixtures_dir();
    if (file_exists(fx_ + "/SKIPPED"))
      SENDENSE_SKIP("fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env"))
        << "no fixtures in " << fx_ << ": run `ctest -R make_fixtures` (or tests/fixtures/make-fixtures.sh)";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    ASSERT_TRUE(file_exists(restorefs_binary())) << restorefs_binary();
    ASSERT_TRUE(file_exists(cli_binary())) << cli_binary();
    manifest_ = std::make_unique<Manifest>(fx_ + "/manifest.env");
    full_ = m("FULL_ID");
    inc_ = m("INC_ID");
    db_ = m("DB_ID");
    files_ = m("FILES_ID");
    broken_ = m("BROKEN_ID");

    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    CommandResult r = cli("catalog import " + q(fx_ + "/repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
  }

  void TearDown() override {
    if (!daemon_) return;
    std::string problem = daemon_->stop();
    EXPECT_EQ(problem, "") << "stopping the daemon with SIGTERM";
    EXPECT_FALSE(is_mounted(mnt_)) << "mount left behind";
    std::string log = daemon_->log();
    for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
      EXPECT_EQ(log.find(bad), std::string::npos) << "daemon log holds \"" << bad << "\"";
    CommandResult sums = run("cd " + q(fx_ + "/repo") + " && sha256sum --quiet -c ../repo.sha256");
    EXPECT_EQ(sums.status, 0) << "an image changed:\n" << sums.output;
    // SENDENSE_TEST_LOG_DIR=DIR keeps every test's daemon log as DIR/<test>.log.
    if (const char* keep = std::getenv("SENDENSE_TEST_LOG_DIR"); keep && *keep) {
      const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
      run("mkdir -p " + q(keep) + " && cp " + q(daemon_->log_path()) + " " +
          q(std::string(keep) + "/" + info->test_suite_name() + "." + info->name() + ".log"));
    }
    if (HasFailure()) std::cerr << "---- daemon log (" << daemon_->log_path() << ") ----\n" << tail(log, 80);
  }

  static std::string tail(const std::string& s, int lines) {
    size_t pos = s.size();
    for (int i = 0; i <= lines && pos != std::string::npos && pos > 0; ++i) pos = s.rfind('\n', pos - 1);
    return pos == std::string::npos ? s : s.substr(pos + 1);
  }

  std::string m(const std::string& key) const { return (*manifest_)[key]; }
  CommandResult cli(const std::string& args) { return run(q(cli_binary()) + " " + args + " --catalog " + q(catalog_)); }

  void start(const std::vector<std::string>& args = {}) {
    std::string err = daemon_->start(args);
    ASSERT_EQ(err, "") << "starting the daemon";
  }

  // The tenant acme (uid/gid 20101), given the VM "files"; the daemon
  // started, and acme's view mounted at `view`.
  void start_with_tenant_acme(std::string& view) {
    for (const char* cmd : {"tenant add acme --uid 20101 --gid 20101", "tenant assign acme --vm files"}) {
      CommandResult r = cli(cmd);
      ASSERT_EQ(r.status, 0) << cmd << ": " << r.output;
    }
    ASSERT_NO_FATAL_FAILURE(start());
    view = path("tenants/acme");
    ASSERT_TRUE(wait_for([&] { return is_mounted(view); }, std::chrono::seconds(10))) << tail(log(), 20);
  }

  std::string path(const std::string& rel) const { return mnt_ + "/" + rel; }
  std::string vol(const std::string& id, const std::string& volume) const { return mnt_ + "/" + id + "/" + volume; }
  std::string expected(const std::string& id, const std::string& volume) const {
    return fx_ + "/expected/" + id + "-" + volume;
  }
  std::string log() const { return daemon_->log(); }

  // Runs two commands; on different output shows a diff.
  void expect_same_output(const std::string& actual_cmd, const std::string& expected_cmd, const std::string& what) {
    CommandResult a = run(actual_cmd);
    CommandResult e = run(expected_cmd);
    EXPECT_EQ(e.status, 0) << what << ": " << expected_cmd << "\n" << e.output;
    EXPECT_EQ(a.status, 0) << what << ": " << actual_cmd << "\n" << a.output.substr(0, 4000);
    if (a.output != e.output) {
      write_file(tmp_ / "actual.txt", a.output);
      write_file(tmp_ / "expected.txt", e.output);
      ADD_FAILURE() << what << " differs (- expected, + mount):\n"
                    << run("diff -u " + q(tmp_ / "expected.txt") + " " + q(tmp_ / "actual.txt") + " | head -60").output;
    }
  }

  // A mounted volume against a tree on the host: rsync -aHAX --checksum sees
  // nothing to do, find/stat listing and sha256 of every file are equal.
  void check_tree(const std::string& actual, const std::string& reference, bool skip_lost_found) {
    SCOPED_TRACE(actual + " vs " + reference);
    CommandResult r = run(rsync_compare_command(actual, reference, skip_lost_found));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, "") << "rsync -aHAX --checksum --dry-run sees differences";
    expect_same_output(tree_listing_command(actual, skip_lost_found), tree_listing_command(reference, skip_lost_found),
                       "find listing (type mode owner nlink mtime size target)");
    expect_same_output(checksums_command(actual, skip_lost_found), checksums_command(reference, skip_lost_found),
                       "sha256 of every file");
    std::string prune = skip_lost_found ? " -path ./lost+found -prune -o -print" : "";
    expect_same_output("cd " + q(actual) + " && find ." + prune + " | wc -l",
                       "cd " + q(reference) + " && find ." + prune + " | wc -l", "find | wc -l");
  }

  // sha256 of a file; an unreadable file fails the test but not at once
  // (sha256_of throws), so the other checks still run.
  std::string sha(const std::string& p) {
    CommandResult r = run("sha256sum " + q(p));
    if (r.status != 0 || r.output.size() < 64) {
      ADD_FAILURE() << "sha256sum " << p << ": " << r.output;
      return "(unreadable " + p + ")";
    }
    return r.output.substr(0, 64);
  }

  std::string ino(const std::string& p) { return trim(run_ok("stat -c %i " + q(p))); }

  TempDir tmp_;  // declared first: destroyed after the daemon (unmounted) is gone
  std::string fx_, mnt_, catalog_;
  std::string full_, inc_, db_, files_, broken_;
  std::unique_ptr<Manifest> manifest_;
  std::unique_ptr<RestoreDaemon> daemon_;
};

#define START_DAEMON(...) ASSERT_NO_FATAL_FAILURE(start(__VA_ARGS__))

// ------------------------------------------------------------------ content

TEST_F(DaemonTest, FullPart1MatchesSourceTree) {
  START_DAEMON();
  EXPECT_EQ(run_ok("ls " + q(path(full_))), "part1\npart2\n");
  // Against the tree mkfs.ext4 -d was given, and against what the kernel showed.
  check_tree(vol(full_, "part1"), fx_ + "/src", /*skip_lost_found=*/true);
  check_tree(vol(full_, "part1"), expected(full_, "part1"), false);
  // Special files: the char device's numbers, the FIFO.
  std::string fmt = "stat -c '%n %F %t:%T %a %u:%g %y' ";
  expect_same_output("cd " + q(vol(full_, "part1")) + " && " + fmt + "special/*",
                     "cd " + q(fx_ + "/src") + " && " + fmt + "special/*", "special files");
  // Sparse file: as stored, far fewer blocks than its size.
  std::string sparse = vol(full_, "part1") + "/data/sparse.bin";
  EXPECT_EQ(trim(run_ok("stat -c %s " + q(sparse))), "10485760");
  EXPECT_LT(std::stoll(run_ok("stat -c %b " + q(sparse))) * 512, 1024 * 1024) << "sparse file shows as allocated";
  // Hard links share one inode number.
  EXPECT_EQ(ino(vol(full_, "part1") + "/data/hardlink-a"), ino(vol(full_, "part1") + "/docs/hardlink-c"));
  // Symlinks come back as stored, never followed.
  EXPECT_EQ(run_ok("readlink " + q(vol(full_, "part1") + "/links/absolute")), "/etc/hostname\n");
  EXPECT_EQ(run_ok("readlink " + q(vol(full_, "part1") + "/links/dangling")), "does-not-exist\n");
  EXPECT_EQ(run_ok("getfattr --absolute-names --only-values -n user.x " + q(vol(full_, "part1") + "/attrs/xattr-file")), "hello");
  EXPECT_NE(run_ok("getfacl -pn " + q(vol(full_, "part1") + "/attrs/acl-file")).find("user:1000:rw-"),
            std::string::npos);
  EXPECT_EQ(trim(run_ok("ls " + q(vol(full_, "part1") + "/many") + " | wc -l")), "3000");
}

TEST_F(DaemonTest, FullPart2MatchesSourceTree) {
  START_DAEMON();
  check_tree(vol(full_, "part2"), fx_ + "/src-part2", true);
  check_tree(vol(full_, "part2"), expected(full_, "part2"), false);
}

TEST_F(DaemonTest, IncrementalMatchesWhatTheKernelWrote) {
  START_DAEMON();
  EXPECT_EQ(run_ok("ls " + q(path(inc_))), "part1\npart2\n");
  check_tree(vol(inc_, "part1"), expected(inc_, "part1"), false);
  check_tree(vol(inc_, "part2"), expected(inc_, "part2"), false);
}

TEST_F(DaemonTest, FullKeepsOldContentIncrementalShowsNew) {
  START_DAEMON();
  std::string f1 = vol(full_, "part1") + "/", i1 = vol(inc_, "part1") + "/";
  std::string modified = m("INC_MODIFIED"), added = m("INC_ADDED"), deleted = m("INC_DELETED"),
              chmodded = m("INC_CHMODDED");
  EXPECT_EQ(sha(f1 + modified), sha(fx_ + "/src/" + modified));
  EXPECT_EQ(sha(i1 + modified), sha(expected(inc_, "part1") + "/" + modified));
  EXPECT_NE(sha(f1 + modified), sha(i1 + modified));
  EXPECT_FALSE(file_exists(f1 + added));
  EXPECT_TRUE(file_exists(i1 + added));
  EXPECT_EQ(sha(i1 + added), sha(expected(inc_, "part1") + "/" + added));
  EXPECT_TRUE(file_exists(f1 + deleted));
  EXPECT_FALSE(file_exists(i1 + deleted));
  EXPECT_EQ(trim(run_ok("stat -c %a " + q(f1 + chmodded))), "644");
  EXPECT_EQ(trim(run_ok("stat -c %a " + q(i1 + chmodded))), m("INC_CHMODDED_MODE"));
  // Same guest file, different backups: different inode numbers.
  EXPECT_NE(ino(f1 + "docs/config.ini"), ino(i1 + "docs/config.ini"));
}

TEST_F(DaemonTest, MbrPrimaryAndLogicalVolumes) {
  START_DAEMON();
  EXPECT_EQ(run_ok("ls " + q(path(db_))), "part1\npart5\npart6\n");
  for (const char* v : {"part1", "part5", "part6"}) {
    check_tree(vol(db_, v), fx_ + "/src-db-" + v, true);
    check_tree(vol(db_, v), expected(db_, v), false);
  }
}

TEST_F(DaemonTest, WholeDiskVolume) {
  START_DAEMON();
  EXPECT_EQ(run_ok("ls " + q(path(files_))), "disk\n");
  check_tree(vol(files_, "disk"), fx_ + "/src-files", true);
  check_tree(vol(files_, "disk"), expected(files_, "disk"), false);
}

TEST_F(DaemonTest, CopyOutWithCpA) {
  START_DAEMON();
  std::string out = tmp_ / "copy";
  ASSERT_EQ(::mkdir(out.c_str(), 0755), 0);
  for (const char* dir : {"docs", "attrs", "dir with spaces", "data", "many"}) {
    CommandResult r = run("cp -a " + q(vol(full_, "part1") + "/" + dir) + " " + q(out + "/"));
    EXPECT_EQ(r.status, 0) << "cp -a " << dir << ": " << r.output;
    CommandResult cmp = run(rsync_compare_command(out + "/" + dir, fx_ + "/src/" + dir, false));
    EXPECT_EQ(cmp.output, "") << "copy of " << dir << " differs from the source";
  }
}

// ------------------------------------------------------------------ read-only

TEST_F(DaemonTest, WritesFailWithReadOnlyFileSystem) {
  START_DAEMON();
  std::string p = vol(full_, "part1");
  std::string f = p + "/docs/readme.txt";
  const std::vector<std::string> attempts = {
      "touch " + q(p + "/new-file"),
      "touch " + q(f),
      "mkdir " + q(p + "/new-dir"),
      "rmdir " + q(p + "/attrs/acl-dir"),
      "rm -f " + q(f),
      "mv " + q(f) + " " + q(p + "/docs/renamed.txt"),
      "echo x > " + q(f),
      "echo x >> " + q(f),
      "echo x > " + q(p + "/docs/new.txt"),
      "truncate -s 0 " + q(f),
      "setfattr -n user.y -v 1 " + q(f),
      "setfattr -x user.x " + q(p + "/attrs/xattr-file"),
      "setfacl -m u:1234:r " + q(f),
      "chmod 600 " + q(f),
      "chown 1:1 " + q(f),
      "ln " + q(f) + " " + q(p + "/docs/hardlink"),
      "ln -s x " + q(p + "/docs/symlink"),
      "mkfifo " + q(p + "/docs/fifo"),
      "mkdir " + q(path("new-backup-dir")),
      "touch " + q(path(full_ + "/new-volume")),
      "mkdir " + q(path("by-vm/new-vm")),
  };
  for (const auto& cmd : attempts) {
    CommandResult r = run(cmd);
    EXPECT_NE(r.status, 0) << cmd << " succeeded";
    EXPECT_NE(r.output.find("Read-only file system"), std::string::npos) << cmd << ": " << r.output;
  }
  EXPECT_EQ(sha(f), sha(fx_ + "/src/docs/readme.txt"));
  EXPECT_EQ(trim(run_ok("stat -c %a " + q(f))), "644");
}

TEST_F(DaemonTest, MountIsNosuidNodev) {
  START_DAEMON();
  bool found = false;
  for (const auto& e : read_mountinfo()) {
    if (e.mount_point != mnt_) continue;
    found = true;
    std::string opts = "," + e.mount_options + ",";
    EXPECT_NE(opts.find(",nosuid,"), std::string::npos) << e.mount_options;
    EXPECT_NE(opts.find(",nodev,"), std::string::npos) << e.mount_options;
    EXPECT_EQ(e.fs_type.rfind("fuse", 0), 0u) << e.fs_type;
  }
  EXPECT_TRUE(found);
}

// A guest uid is only a number on the host: a host user whose uid matches a
// guest file's owner (nobody, 65534, is one in many guests)
// must not reach it. Only the daemon's user enters a backup's folder.
TEST_F(DaemonTest, HostUsersCannotEnterBackups) {
  START_DAEMON();
  // The test's own folder must not be what stops them.
  ASSERT_EQ(::chmod(tmp_.path().c_str(), 0711), 0);
  const std::string secret = vol(files_, "disk") + "/README";
  ASSERT_EQ(sha(secret), sha(fx_ + "/src-files/README"));  // attached, readable by root
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups -- ";
  EXPECT_EQ(trim(run_ok("stat -c '%a %u' " + q(path(files_)))), "500 0");
  CommandResult r = run(as_nobody + "ls " + q(path(files_)));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
  r = run(as_nobody + "cat " + q(secret));
  EXPECT_NE(r.status, 0) << r.output;
  // The catalog listing itself stays readable.
  EXPECT_EQ(run(as_nobody + "ls " + q(mnt_)).status, 0);
}

// ------------------------------------------------------------------ lifecycle

TEST_F(DaemonTest, RootListingAttachesNothing) {
  START_DAEMON();
  std::string listing = run_ok("ls -l " + q(mnt_));
  for (const auto& id : manifest_->list("BACKUP_IDS")) EXPECT_NE(listing.find(id), std::string::npos) << id;
  EXPECT_NE(listing.find("by-vm"), std::string::npos);
  run_ok("ls -la " + q(path("by-vm")) + " " + q(path("by-vm/web01")) + " " + q(path("by-vm/db01")));
  run_ok("stat " + q(path(full_)) + " " + q(path(broken_)));
  std::this_thread::sleep_for(500ms);
  std::string l = log();
  EXPECT_EQ(count_events(l, "attach"), 0) << "listing the root attached a backup";
  EXPECT_EQ(count_events(l, "attach_failed"), 0) << "listing the root opened an image";
  CommandResult st = cli("status");
  EXPECT_EQ(st.status, 0) << st.output;
  if (have_tool("sqlite3")) {
    EXPECT_EQ(trim(run_ok("sqlite3 " + q(catalog_) + " 'select count(*) from restore_mounts'")), "0")
        << "status:\n" << st.output;
  }
  // The backup directory's mtime is the backup time (synthetic attributes).
  EXPECT_EQ(trim(run_ok("TZ=UTC stat -c %y " + q(path(full_)) + " | cut -c1-19")), "2026-01-01 00:00:00");
}

TEST_F(DaemonTest, FirstLookupInsideAttachesAndStatusShowsIt) {
  START_DAEMON();
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
  EXPECT_TRUE(wait_for([&] { return count_events(log(), "attach", {{"backup", full_}}) == 1; }, 5s))
      << "no `attach backup=" << full_ << "` line";
  EXPECT_EQ(count_events(log(), "attach", {{"backup", db_}}), 0);
  CommandResult st = cli("status");
  EXPECT_EQ(st.status, 0) << st.output;
  EXPECT_TRUE(wait_for([&] { return cli("status").output.find(full_) != std::string::npos; }, 10s))
      << "status does not show the attached backup:\n" << cli("status").output;
}

TEST_F(DaemonTest, IdleDetachThenReattachKeepsInodes) {
  START_DAEMON({"--idle-timeout", "2"});
  std::string file = vol(full_, "part1") + "/docs/readme.txt";
  std::string sum = sha(file);
  std::string inode = ino(file);
  std::string dir_inode = ino(vol(full_, "part1") + "/docs");
  ASSERT_EQ(count_events(log(), "attach", {{"backup", full_}}), 1);
  // Idle means no request: a file held open does not keep the backup attached.
  int fd = ::open(file.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << "open: " << std::strerror(errno);
  ASSERT_TRUE(wait_for([&] { return count_events(log(), "detach", {{"backup", full_}, {"reason", "idle"}}) >= 1; },
                       20s))
      << "no idle detach within 20 s while a file was held open";
  // Drop the kernel's caches where allowed, so the reads reach the daemon.
  run("sync; echo 3 > /proc/sys/vm/drop_caches");
  std::string held(4096, '\0');
  const ssize_t got = ::pread(fd, held.data(), held.size(), 0);
  ::close(fd);
  ASSERT_GE(got, 0) << std::strerror(errno);
  held.resize(static_cast<size_t>(got));
  EXPECT_EQ(held, read_file(fx_ + "/src/docs/readme.txt").substr(0, 4096)) << "the held file read other bytes";
  EXPECT_EQ(sha(vol(full_, "part1") + "/many/f1234"), sha(fx_ + "/src/many/f1234"));
  EXPECT_EQ(sha(file), sum);
  EXPECT_EQ(ino(file), inode);
  EXPECT_EQ(ino(vol(full_, "part1") + "/docs"), dir_inode);
  EXPECT_TRUE(wait_for([&] { return count_events(log(), "attach", {{"backup", full_}}) >= 2; }, 5s))
      << "reading after the idle detach did not attach again";
}

TEST_F(DaemonTest, AttachAndDetachFromTheCli) {
  START_DAEMON({"--idle-timeout", "600"});
  CommandResult r = cli("attach " + full_ + " --json --mountpoint " + q(mnt_));
  ASSERT_EQ(r.status, 0) << r.output << tail(log(), 20);
  EXPECT_NE(r.output.find("\"mount_id\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"part1\""), std::string::npos) << r.output;
  EXPECT_EQ(count_events(log(), "attach", {{"backup", full_}}), 1);
  EXPECT_NE(cli("status").output.find(full_), std::string::npos);
  r = cli("detach " + full_);
  ASSERT_EQ(r.status, 0) << r.output << tail(log(), 20);
  EXPECT_EQ(trim(r.output), "detached " + full_);
  EXPECT_TRUE(wait_for(
      [&] { return count_events(log(), "detach", {{"backup", full_}, {"reason", "requested"}}) == 1; }, 5s))
      << tail(log(), 20);
  EXPECT_EQ(cli("status").output.find(full_), std::string::npos) << "still a mount row after the detach";
  r = cli("detach " + full_);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(trim(r.output), full_ + " is not attached");
  // The next reader attaches again, as after an idle detach.
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
  EXPECT_EQ(count_events(log(), "attach", {{"backup", full_}}), 2);
  r = cli("attach no-such-backup --mountpoint " + q(mnt_));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no-such-backup"), std::string::npos) << r.output;
}

TEST_F(DaemonTest, MaxMountsEvictsLeastRecentlyUsedIdleBackup) {
  START_DAEMON({"--max-mounts", "1", "--idle-timeout", "600"});
  std::string full_file = vol(full_, "part1") + "/docs/readme.txt";
  EXPECT_EQ(sha(full_file), sha(fx_ + "/src/docs/readme.txt"));
  EXPECT_EQ(sha(vol(db_, "part5") + "/README"), sha(fx_ + "/src-db-part5/README"));
  EXPECT_TRUE(
      wait_for([&] { return count_events(log(), "detach", {{"backup", full_}, {"reason", "evict"}}) == 1; }, 5s))
      << "attaching a second backup with --max-mounts 1 did not evict the first";
  EXPECT_EQ(count_events(log(), "attach", {{"backup", db_}}), 1);

  // A file and a folder held open pin nothing (an NFS server holds
  // thousands): the next backup evicts theirs, and both read on through
  // their handles, the backup attaching again behind them.
  const std::string blob = vol(db_, "part5") + "/sub/blob.bin";
  int fd = ::open(blob.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << "open: " << std::strerror(errno);
  DIR* dir = ::opendir((vol(db_, "part5") + "/sub").c_str());
  ASSERT_NE(dir, nullptr) << "opendir: " << std::strerror(errno);
  CommandResult other = run("ls " + q(vol(files_, "disk")));
  EXPECT_EQ(other.status, 0) << other.output;
  EXPECT_TRUE(wait_for([&] { return count_events(log(), "detach", {{"backup", db_}, {"reason", "evict"}}) == 1; }, 5s))
      << "a backup with an open file and an open folder was not evicted";
  EXPECT_EQ(count_events(log(), "busy"), 0);
  run("sync; echo 3 > /proc/sys/vm/drop_caches");  // so the reads below reach the daemon
  std::string held;
  char chunk[65536];
  for (ssize_t n; (n = ::pread(fd, chunk, sizeof chunk, static_cast<off_t>(held.size()))) > 0;) held.append(chunk, n);
  EXPECT_EQ(held, read_file(fx_ + "/src-db-part5/sub/blob.bin")) << "the held file read other bytes";
  std::set<std::string> listed;
  while (dirent* e = ::readdir(dir)) listed.insert(e->d_name);
  std::set<std::string> want = {".", ".."};
  for (const auto& e : std::filesystem::directory_iterator(fx_ + "/src-db-part5/sub")) want.insert(e.path().filename().string());
  EXPECT_EQ(listed, want) << "the held folder listed other entries";
  ::closedir(dir);
  ::close(fd);
  EXPECT_GE(count_events(log(), "attach", {{"backup", db_}}), 2) << "reading the held file did not attach again";
  EXPECT_EQ(count_events(log(), "op_failed"), 0) << tail(log(), 20);

  // And the first one comes back when needed.
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/config.ini"), sha(fx_ + "/src/docs/config.ini"));
}

TEST_F(DaemonTest, DamagedBackupGivesEioOthersKeepWorking) {
  START_DAEMON();
  for (int attempt = 0; attempt < 2; ++attempt) {
    CommandResult r = run("ls " + q(path(broken_)));
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << r.output;
  }
  CommandResult deep = run("cat " + q(path(broken_) + "/part1/README"));
  EXPECT_NE(deep.status, 0);
  EXPECT_NE(deep.output.find("Input/output error"), std::string::npos) << deep.output;
  EXPECT_TRUE(wait_for([&] { return count_events(log(), "attach_failed", {{"backup", broken_}}) >= 1; }, 5s))
      << "no `attach_failed backup=" << broken_ << "` line";
  // The daemon and the other backups are fine.
  EXPECT_EQ(sha(vol(full_, "part1") + "/data/random-3M.bin"), sha(fx_ + "/src/data/random-3M.bin"));
  EXPECT_EQ(sha(vol(db_, "part6") + "/sub/blob.bin"), sha(fx_ + "/src-db-part6/sub/blob.bin"));
  std::string listing = run_ok("ls " + q(mnt_));
  EXPECT_NE(listing.find(broken_), std::string::npos) << "the damaged backup should stay listed";
  EXPECT_TRUE(daemon_->running());
}

TEST_F(DaemonTest, RestartKeepsInodeNumbers) {
  START_DAEMON();
  const std::vector<std::string> paths = {
      full_,
      full_ + "/part1",
      full_ + "/part1/docs",
      full_ + "/part1/docs/readme.txt",
      full_ + "/part1/data/hardlink-b",
      full_ + "/part1/links/relative",
      full_ + "/part1/many/f2999",
      full_ + "/part1/dir with spaces/Ünïcödé-日本語.txt",
      full_ + "/part2/sub/blob.bin",
      inc_ + "/part1/docs/readme.txt",
      db_ + "/part5/sub/inner/note.txt",
      db_ + "/part6",
      files_ + "/disk/random-2M.bin",
      "by-vm",
      "by-vm/web01",
  };
  auto inodes = [&] {
    std::string out;
    for (const auto& p : paths) out += ino(path(p)) + " " + p + "\n";
    return out;
  };
  std::string before = inodes();
  ASSERT_EQ(daemon_->stop(), "");
  START_DAEMON();
  EXPECT_EQ(inodes(), before);
}

TEST_F(DaemonTest, ReaddirInodeEqualsStatInode) {
  START_DAEMON();
  for (const std::string& dir : std::vector<std::string>{mnt_, path(full_), vol(full_, "part1"), vol(full_, "part1") + "/docs",
                                vol(full_, "part1") + "/dir with spaces", vol(db_, "part5") + "/sub"}) {
    DIR* d = ::opendir(dir.c_str());
    ASSERT_NE(d, nullptr) << dir << ": " << std::strerror(errno);
    int entries = 0;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      ++entries;
      struct stat st {};
      ASSERT_EQ(::lstat((dir + "/" + name).c_str(), &st), 0) << dir << "/" << name;
      EXPECT_EQ(e->d_ino, st.st_ino) << dir << "/" << name << ": d_ino != st_ino";
    }
    ::closedir(d);
    EXPECT_GT(entries, 0) << dir;
  }
}

TEST_F(DaemonTest, CatalogAddAndRemoveWhileRunning) {
  START_DAEMON();
  const std::string id = "extra-files-copy";
  EXPECT_EQ(run_ok("ls " + q(mnt_)).find(id), std::string::npos);
  CommandResult add = cli("catalog add --id " + id + " --path " + q(fx_ + "/repo/files/" + files_ + ".img") +
                          " --vm extra --time 2026-02-01T00:00:00Z");
  ASSERT_EQ(add.status, 0) << add.output;
  EXPECT_NE(cli("catalog list").output.find(id), std::string::npos);
  EXPECT_TRUE(wait_for([&] { return run("ls " + q(mnt_)).output.find(id) != std::string::npos; }, 5s))
      << "the added backup did not appear within 5 s";
  EXPECT_EQ(sha(path(id + "/disk/README")), sha(fx_ + "/src-files/README"));
  EXPECT_EQ(run_ok("readlink " + q(path("by-vm/extra/latest"))), "../../" + id + "\n");

  CommandResult rm = cli("catalog remove " + id);
  ASSERT_EQ(rm.status, 0) << rm.output;
  EXPECT_TRUE(wait_for([&] { return run("ls " + q(mnt_)).output.find(id) == std::string::npos; }, 5s))
      << "the removed backup is still listed after 5 s";
  EXPECT_TRUE(wait_for([&] { return !file_exists(path(id)); }, 5s)) << "the removed backup still resolves";
  EXPECT_TRUE(wait_for([&] { return !file_exists(path("by-vm/extra")); }, 5s));
  // The others are untouched.
  EXPECT_EQ(sha(vol(files_, "disk") + "/README"), sha(fx_ + "/src-files/README"));
}

TEST_F(DaemonTest, ByVmSymlinksResolve) {
  START_DAEMON();
  EXPECT_EQ(run_ok("ls " + q(path("by-vm"))), "broken\ndb01\nfiles\nweb01\n");
  EXPECT_EQ(run_ok("readlink " + q(path("by-vm/web01/latest"))), "../../" + inc_ + "\n");
  EXPECT_EQ(run_ok("readlink " + q(path("by-vm/db01/latest"))), "../../" + db_ + "\n");
  // Each timestamp entry points at its backup; both web01 backups are there.
  std::set<std::string> targets;
  std::string entries = run_ok("ls " + q(path("by-vm/web01")));
  std::istringstream in(entries);
  std::string name;
  int count = 0;
  while (std::getline(in, name)) {
    ++count;
    std::string link = path("by-vm/web01/" + name);
    EXPECT_TRUE(trim(run_ok("stat -c %F " + q(link))) == "symbolic link") << name;
    targets.insert(trim(run_ok("readlink " + q(link))));
  }
  EXPECT_EQ(count, 3) << entries;  // two timestamps and latest
  EXPECT_EQ(targets, (std::set<std::string>{"../../" + full_, "../../" + inc_}));
  EXPECT_EQ(run_ok("ls " + q(path("by-vm/web01/latest/"))), "part1\npart2\n");
  EXPECT_EQ(sha(path("by-vm/web01/latest/part1/") + m("INC_MODIFIED")),
            sha(expected(inc_, "part1") + "/" + m("INC_MODIFIED")));
  EXPECT_EQ(trim(run_ok("readlink -f " + q(path("by-vm/web01/latest")))), path(inc_));
}

// The kernel sends no RELEASE for what is still open when the session ends:
// the daemon must still exit cleanly and free those handles (under the
// sanitizer build a leaked handle fails the exit status).
TEST_F(DaemonTest, StopWithFilesAndFoldersStillOpenExitsCleanly) {
  START_DAEMON();
  const std::string dir = vol(full_, "part1") + "/docs";
  DIR* d = ::opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir << ": " << std::strerror(errno);
  ASSERT_NE(::readdir(d), nullptr);
  const int fd = ::open((dir + "/readme.txt").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  char c;
  ASSERT_EQ(::read(fd, &c, 1), 1);
  EXPECT_EQ(daemon_->stop(SIGTERM), "");
  ::close(fd);
  ::closedir(d);
  EXPECT_FALSE(is_mounted(mnt_));
}

// Stop signals are blocked in every thread and taken by the main thread
// with sigwait (fuse/daemon.cpp). When they were caught by a handler
// instead, any thread that left them unblocked could take a SIGTERM (one in
// clone(2) does), and the daemon went on serving: CI saw it once. This looks
// at every thread once the daemon has started them all: the tree's and a
// tenant view's FUSE workers, read ahead, an attach's worker client, the
// spare workers' maker, the housekeeper.
TEST_F(DaemonTest, EveryThreadBlocksTheStopSignals) {
  std::string view;
  ASSERT_NO_FATAL_FAILURE(start_with_tenant_acme(view));
  EXPECT_EQ(sha(view + "/" + files_ + "/disk/README"), sha(fx_ + "/src-files/README"));
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
  run_ok("ls -lR " + q(vol(full_, "part1")) + " >/dev/null");
  const std::string task_dir = "/proc/" + std::to_string(daemon_->pid()) + "/task";
  const uint64_t stop_bits = (1ULL << (SIGHUP - 1)) | (1ULL << (SIGINT - 1)) | (1ULL << (SIGTERM - 1));
  int threads = 0;
  std::string unblocked;
  for (const auto& task : std::filesystem::directory_iterator(task_dir)) {
    const pid_t tid = std::stoi(task.path().filename().string());
    // The main thread: in sigwait, which unblocks what it waits for.
    if (tid == daemon_->pid()) continue;
    const std::string sigblk = status_field(tid, "SigBlk");
    if (sigblk.empty()) continue;  // it ended meanwhile
    ++threads;
    const uint64_t blocked = std::stoull(sigblk, nullptr, 16);
    if ((blocked & stop_bits) != stop_bits) unblocked += " " + std::to_string(tid) + "(" + status_field(tid, "Name") + ")";
  }
  EXPECT_GE(threads, 5);
  EXPECT_EQ(unblocked, "") << "threads that could take a SIGTERM before the main thread's sigwait";
  EXPECT_EQ(daemon_->stop(SIGTERM), "");
}

// The tree unmounted under a running daemon (umount, not a signal): the
// daemon ends by itself, exit status 0, and the mount is not kept.
TEST_F(DaemonTest, UnmountingTheTreeEndsTheDaemon) {
  START_DAEMON();
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
  // Spare workers (a worker-isolated run) included: the one that follows
  // the attach's take must not keep a copy of the mount (worker/sandbox.h).
  wait_for([&] { return count_events(log(), "spare_worker_ready") > count_events(log(), "worker_started", {{"spare", "yes"}}); },
           10s);
  run_ok("umount " + q(mnt_));
  EXPECT_EQ(daemon_->wait_exit(20s, "of its tree's umount"), "");
  EXPECT_EQ(count_events(log(), "stopped", {{"mount", "gone"}}), 1) << tail(log(), 20);
  EXPECT_GE(count_events(log(), "detach", {{"backup", full_}, {"reason", "shutdown"}}), 1) << tail(log(), 20);
  EXPECT_FALSE(is_mounted(mnt_));
}

TEST_F(DaemonTest, SigintStopsCleanlyAndUnmountTakesTheTreeDown) {
  START_DAEMON();
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
  EXPECT_EQ(daemon_->stop(SIGINT), "");
  EXPECT_FALSE(is_mounted(mnt_));
  EXPECT_GE(count_events(log(), "detach", {{"backup", full_}, {"reason", "shutdown"}}), 1)
      << "no `detach backup=" << full_ << " reason=shutdown` line";
}

}  // namespace
}  // namespace sendense::test

namespace sendense::test {
namespace {

// ------------------------------------------------------------- crash, names

// A tenant's view: a FUSE mount of its own at tenants/<name>, holding only
// its VMs' backups, everything owned by the tenant and readable by it alone;
// it follows the catalog (assign, remove) and a restart keeps it.
TEST_F(DaemonTest, TenantViewIsAMountOfItsOwnOwnedByTheTenant) {
  std::string view;
  ASSERT_NO_FATAL_FAILURE(start_with_tenant_acme(view));
  EXPECT_NE(trim(run_ok("mountpoint -d " + q(view))), trim(run_ok("mountpoint -d " + q(mnt_))))
      << "the view is not a filesystem of its own";
  std::set<std::string> want = {files_, "by-vm"};
  std::string listing;
  for (const auto& n : want) listing += n + "\n";
  EXPECT_EQ(run_ok("ls " + q(view)), listing);
  EXPECT_EQ(run_ok("ls " + q(view + "/by-vm")), "files\n");
  EXPECT_NE(run("ls " + q(view + "/" + full_)).status, 0) << "another VM's backup is reachable by name";
  // Owned by the tenant: it reads its files; another uid reads nothing
  // (the test's folder opened to all, so only the view's modes decide).
  run_ok("chmod 0755 " + q(tmp_.path()));
  const std::string readme = view + "/" + files_ + "/disk/README";
  EXPECT_EQ(trim(run_ok("stat -c %u:%g:%a " + q(readme))), "20101:20101:440");
  CommandResult as_tenant = run("setpriv --reuid 20101 --regid 20101 --clear-groups sha256sum " + q(readme));
  EXPECT_EQ(as_tenant.output.substr(0, 64), sha(fx_ + "/src-files/README")) << as_tenant.output;
  CommandResult other = run("setpriv --reuid 20102 --regid 20102 --clear-groups cat " + q(readme));
  EXPECT_NE(other.status, 0) << other.output;
  // The operator's tree keeps every backup.
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
  // A VM assigned later shows up within a refresh.
  ASSERT_EQ(cli("tenant assign acme --vm db01").status, 0);
  EXPECT_TRUE(wait_for([&] { return run("ls " + q(view + "/" + db_)).status == 0; }, 10s));
  // A restart takes the view over: same device, same bytes.
  const std::string device = trim(run_ok("mountpoint -d " + q(view)));
  ASSERT_EQ(daemon_->terminate(), "");
  EXPECT_TRUE(is_mounted(view)) << "the stopped daemon did not leave the view to the holder";
  START_DAEMON();
  EXPECT_EQ(sha(readme), sha(fx_ + "/src-files/README"));
  EXPECT_EQ(trim(run_ok("mountpoint -d " + q(view))), device);
  EXPECT_GE(count_events(log(), "mount_taken_over", {{"mountpoint", view}}), 1) << tail(log(), 20);
  // Removing the tenant takes its view down.
  ASSERT_EQ(cli("tenant remove acme").status, 0);
  EXPECT_TRUE(wait_for([&] { return !is_mounted(view); }, 10s)) << "the removed tenant's view is still mounted";
  EXPECT_EQ(count_events(log(), "op_failed"), 0) << tail(log(), 20);
}

// The holder keeps the mount's descriptor, but sleeps through its
// requests: /dev/fuse wakes every poller of a connection on each request,
// so it must not wait on it (fuse_holder.cpp). It still sees the mount go:
// its connection aborted after the daemon stopped, the holder ends by itself.
TEST_F(DaemonTest, TheHolderSleepsThroughRequestsAndSeesTheMountGo) {
  START_DAEMON();
  const std::string holder = trim(run("pgrep -f -x " + q("sendense-restorefs --fuse-holder " + mnt_)).output);
  ASSERT_FALSE(holder.empty()) << "no holder";
  auto wakeups = [&] {
    const std::string status = read_file("/proc/" + holder + "/status");
    const auto at = status.find("voluntary_ctxt_switches:");
    return at == std::string::npos ? -1L : std::atol(status.c_str() + at + 24);
  };
  const long before = wakeups();
  const int ops = count_events(log(), "op");
  run_ok("for i in $(seq 300); do ls " + q(mnt_) + " >/dev/null || exit 1; done");
  const int requests = count_events(log(), "op") - ops;
  const long woken = wakeups() - before;
  EXPECT_GE(requests, 600) << "the listings did not reach the daemon";
  EXPECT_LT(woken, requests / 10) << woken << " wake-ups of the holder for " << requests << " requests";
  ASSERT_EQ(daemon_->terminate(), "");
  ASSERT_TRUE(is_mounted(mnt_));
  // Its connection aborted behind its back (fusectl; a plain umount would
  // wait for a daemon to answer the kernel's DESTROY).
  const std::string ctl = "/sys/fs/fuse/connections";
  const bool mounted_ctl = !is_mounted(ctl) && run("mount -t fusectl none " + ctl).status == 0;
  const std::string minor = trim(run_ok("awk -v m=" + q(mnt_) + " '$5 == m { split($3, d, \":\"); print d[2] }' /proc/self/mountinfo"));
  ASSERT_FALSE(minor.empty());
  run_ok("echo 1 >" + q(ctl + "/" + minor + "/abort"));
  EXPECT_TRUE(wait_for([&] { return !daemon_->holder_running(); }, 10s)) << "the holder outlived its mount";
  run("umount -l " + q(mnt_));
  if (mounted_ctl) run("umount " + ctl);
}

TEST_F(DaemonTest, RestartAfterKill9ClearsDeadMountAndReconciles) {
  START_DAEMON();
  const std::string file = vol(full_, "part1") + "/docs/readme.txt";
  EXPECT_EQ(sha(file), sha(fx_ + "/src/docs/readme.txt"));
  const std::string inode = ino(file);
  EXPECT_NE(cli("status").output.find(full_), std::string::npos);
  daemon_->kill_hard();
  // The mount stays, kept by the holder: the next start takes it over and
  // reconciles the rows.
  EXPECT_TRUE(is_mounted(mnt_));
  const std::string device = trim(run_ok("mountpoint -d " + q(mnt_)));
  START_DAEMON();
  ASSERT_TRUE(wait_for([&] { return count_events(log(), "serving") == 2; }, 15s)) << "the restarted daemon is not serving";
  EXPECT_GE(count_events(log(), "mount_taken_over"), 1) << "no `mount_taken_over` line";
  EXPECT_EQ(trim(run_ok("mountpoint -d " + q(mnt_))), device) << "a new mount (new device) replaced the kept one";
  EXPECT_GE(count_events(log(), "reconciled", {{"backup", full_}}), 1) << "no `reconciled backup=" << full_ << "` line";
  // The kernel kept the pages it read from the dead run: drop them so the
  // read below reaches (and attaches in) the new run.
  run_ok("sync; echo 3 > /proc/sys/vm/drop_caches");
  EXPECT_EQ(sha(file), sha(fx_ + "/src/docs/readme.txt"));
  EXPECT_EQ(ino(file), inode);
  std::string status = cli("status").output;
  EXPECT_NE(status.find("failed"), std::string::npos) << "the crashed run's row is not marked failed:\n" << status;
  EXPECT_NE(status.find("mounted"), std::string::npos) << status;
  // Exactly one live FUSE mount at the mount point.
  int mounts = 0;
  for (const auto& e : read_mountinfo()) mounts += e.mount_point == mnt_;
  EXPECT_EQ(mounts, 1);
}

// Without -f the daemon returns once the tree is mounted and keeps logging
// to the stderr it was given.
TEST_F(DaemonTest, BackgroundModeMountsAndKeepsLogging) {
  const std::string bg_log = tmp_ / "background.log";
  CommandResult r = run(q(restorefs_binary()) + " " + q(mnt_) + " --catalog " + q(catalog_) + " 2>" + q(bg_log));
  ASSERT_EQ(r.status, 0) << r.output << read_file(bg_log);
  EXPECT_TRUE(is_mounted(mnt_)) << "returned 0 but nothing is mounted";
  EXPECT_EQ(sha(vol(full_, "part1") + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
  const std::string pid = trim(run("pgrep -f " + q("sendense-restorefs " + mnt_ + " ")).output);
  ASSERT_FALSE(pid.empty()) << "no background daemon process";
  run("kill -TERM " + pid);
  EXPECT_TRUE(wait_for([&] { return read_file(bg_log).find(" stopped ") != std::string::npos; }, 10s)) << read_file(bg_log);
  EXPECT_TRUE(is_mounted(mnt_)) << "SIGTERM took the mount away: the next start could not take it over";
  run_ok(q(restorefs_binary()) + " --unmount " + q(mnt_));
  EXPECT_TRUE(wait_for([&] { return !is_mounted(mnt_); }, 10s)) << "--unmount left the mount";
  const std::string logged = read_file(bg_log);
  EXPECT_NE(logged.find(" serving "), std::string::npos) << logged;
  EXPECT_NE(logged.find(" attach "), std::string::npos) << logged;
  EXPECT_TRUE(wait_for([&] { return read_file(bg_log).find(" stopped ") != std::string::npos; }, 10s)) << read_file(bg_log);
  for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
    EXPECT_EQ(read_file(bg_log).find(bad), std::string::npos) << bad;
}

// The daemon itself refuses writes, not only the kernel's read-only mount:
// mounted rw on request, every write still fails with EROFS.
TEST_F(DaemonTest, DaemonAnswersErofsEvenOnARwMount) {
  START_DAEMON({"-o", "rw"});
  const std::string v = vol(full_, "part1");
  // A read first: on a read-only mount the first OPEN would be answered
  // ENOSYS and the kernel would send no more (node_files.h); on this one
  // OPEN stays, so the writing opens below still reach the daemon.
  EXPECT_EQ(sha(v + "/docs/config.ini"), sha(fx_ + "/src/docs/config.ini"));
  for (const std::string& cmd : {"touch " + q(v + "/new-file"), "mkdir " + q(v + "/new-dir"), "rm " + q(v + "/docs/readme.txt"),
                                 "mv " + q(v + "/docs/readme.txt") + " " + q(v + "/moved"),
                                 "sh -c 'echo x >> " + v + "/docs/readme.txt'", "chmod 777 " + q(v + "/docs/readme.txt"),
                                 "setfattr -n user.y -v 1 " + q(v + "/docs/readme.txt"), "ln -s x " + q(v + "/link"),
                                 "ln " + q(v + "/docs/readme.txt") + " " + q(v + "/hard"), "truncate -s 0 " + q(v + "/docs/readme.txt")}) {
    CommandResult r = run(cmd);
    EXPECT_NE(r.status, 0) << cmd;
    EXPECT_NE(r.output.find("Read-only file system"), std::string::npos) << cmd << ": " << r.output;
  }
  EXPECT_EQ(sha(v + "/docs/readme.txt"), sha(fx_ + "/src/docs/readme.txt"));
}

// A newer backup of a vm moves by-vm/<vm>/latest at once, even though the
// kernel caches symlink targets.
TEST_F(DaemonTest, LatestFollowsANewerBackupOfTheSameVm) {
  START_DAEMON();
  const std::string latest = path("by-vm/files/latest");
  EXPECT_EQ(run_ok("readlink " + q(latest)), "../../" + files_ + "\n");
  EXPECT_EQ(run_ok("readlink " + q(latest)), "../../" + files_ + "\n");  // now cached by the kernel
  ASSERT_EQ(cli("catalog add --id files-newer --format raw --vm files --time 2030-01-01T00:00:00Z --path " +
                q(fx_ + "/repo/files/" + files_ + ".img")).status, 0);
  EXPECT_TRUE(wait_for([&] { return run("readlink " + q(latest)).output == "../../files-newer\n"; }, 5s))
      << "latest still points at " << run("readlink " + q(latest)).output;
}

// Idle detach and re-attach racing reads from several clients:
// every read returns the right bytes, nothing fails, the daemon keeps serving.
TEST_F(DaemonTest, IdleDetachRacingReadersNeverBreakAFile) {
  START_DAEMON({"--idle-timeout", "1"});
  const std::vector<std::pair<std::string, std::string>> files = {
      {vol(full_, "part1") + "/data/random-3M.bin", fx_ + "/src/data/random-3M.bin"},
      {vol(db_, "part6") + "/sub/blob.bin", fx_ + "/src-db-part6/sub/blob.bin"},
      {vol(files_, "disk") + "/random-2M.bin", fx_ + "/src-files/random-2M.bin"},
  };
  std::string script = "fail=0; ";
  for (size_t w = 0; w < 6; ++w) {
    const auto& [mounted, source] = files[w % files.size()];
    const std::string want = sha(source);
    script += "( for i in 1 2 3 4 5 6; do s=$(sha256sum " + q(mounted) + " | cut -c1-64); [ \"$s\" = " + want +
              " ] || echo \"BAD " + mounted + " $s\"; sleep $(( (i * " + std::to_string(w) + ") % 3 )).$(( (i * " +
              std::to_string(w + 3) + ") % 10 )); done ) & ";
  }
  script += "wait";
  CommandResult r = run(script);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("BAD"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("No such"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("error"), std::string::npos) << r.output;
  const std::string logged = log();
  EXPECT_GE(count_events(logged, "detach", {{"reason", "idle"}}), 1) << "the race was not exercised: no idle detach";
  EXPECT_EQ(count_events(logged, "op_failed"), 0) << tail(logged, 30);
  EXPECT_TRUE(daemon_->running());
}

// Sequential restores read ahead 1 MiB (the largest FUSE request), not the
// kernel's 128 KiB default.
TEST_F(DaemonTest, ReadaheadIsRaisedTo1MiB) {
  START_DAEMON();
  const std::string dev = trim(run_ok("mountpoint -d " + q(mnt_)));
  const std::string knob = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  EXPECT_TRUE(wait_for([&] { return trim(run("cat " + q(knob)).output) == "1024"; }, 5s))
      << knob << " = " << run("cat " + q(knob)).output;
}

// A repository on NFS/CIFS can lose an image under a running daemon: that
// backup answers EIO with a log line naming it, the rest of the tree works.
TEST_F(DaemonTest, VanishedImageGivesEioOthersKeepWorking) {
  const std::string copy = tmp_ / "vanishing.img";
  run_ok("cp " + q(fx_ + "/repo/files/" + files_ + ".img") + " " + q(copy));
  ASSERT_EQ(cli("catalog add --id vanishing --format raw --path " + q(copy)).status, 0);
  START_DAEMON();
  ASSERT_EQ(::unlink(copy.c_str()), 0);
  CommandResult r = run("ls " + q(path("vanishing")));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << r.output;
  EXPECT_TRUE(wait_for([&] { return count_events(log(), "attach_failed", {{"backup", "vanishing"}}) >= 1; }, 5s))
      << "no `attach_failed backup=vanishing` line";
  EXPECT_NE(log().find(copy), std::string::npos) << "the log line does not name the missing image";
  EXPECT_EQ(sha(vol(files_, "disk") + "/README"), sha(fx_ + "/src-files/README"));
  EXPECT_NE(run_ok("ls " + q(mnt_)).find("vanishing"), std::string::npos);
}

// An image truncated in the repository while attached: EIO and one
// `image_changed` line, never bytes from two versions; once the file is
// whole again the next access attaches it afresh (no idle wait). A file
// held open across the change reads nothing more, not even once the image
// is whole again: the kernel may hold its pages of the old version, so its
// node answers EIO until the kernel lets go of it (fuse/node_files.h).
TEST_F(DaemonTest, ImageTruncatedWhileAttachedGivesEioThenReattaches) {
  const std::string copy = tmp_ / "shrinking.img";
  const std::string original = fx_ + "/repo/files/" + files_ + ".img";
  run_ok("cp " + q(original) + " " + q(copy));
  ASSERT_EQ(cli("catalog add --id shrinking --format raw --path " + q(copy)).status, 0);
  START_DAEMON();
  const std::string readme = vol("shrinking", "disk") + "/README";
  const std::string want = sha(fx_ + "/src-files/README");
  EXPECT_EQ(sha(readme), want);
  const int held = ::open(readme.c_str(), O_RDONLY);
  ASSERT_GE(held, 0) << std::strerror(errno);
  char byte = 0;
  ASSERT_EQ(::pread(held, &byte, 1, 0), 1);
  ASSERT_EQ(::truncate(copy.c_str(), 4096), 0);
  run_ok("sync; echo 3 > /proc/sys/vm/drop_caches");
  CommandResult r = run("cat " + q(readme));
  EXPECT_NE(r.status, 0) << "read a truncated image: " << r.output.substr(0, 200);
  EXPECT_TRUE(wait_for([&] { return count_events(log(), "image_changed", {}) >= 1; }, 5s)) << log();
  run_ok("cat " + q(original) + " > " + q(copy));
  run_ok("sync; echo 3 > /proc/sys/vm/drop_caches");
  errno = 0;
  EXPECT_EQ(::pread(held, &byte, 1, 0), -1) << "a file held across the change read on";
  EXPECT_EQ(errno, EIO);
  ::close(held);
  // Once nothing holds it, the kernel forgets the node (asynchronously).
  EXPECT_TRUE(wait_for(
      [&] {
        CommandResult now = run("sync; echo 3 > /proc/sys/vm/drop_caches; sha256sum " + q(readme));
        return now.status == 0 && now.output.substr(0, 64) == want;
      },
      10s))
      << log();
  EXPECT_GE(count_events(log(), "detach", {{"backup", "shrinking"}, {"reason", "image_changed"}}), 1) << log();
  // The other backups never noticed.
  EXPECT_EQ(sha(vol(files_, "disk") + "/README"), sha(fx_ + "/src-files/README"));
}

// A guest can store names no Linux path can hold ('/' and NUL inside a name).
// They are shown escaped (U+2215, U+2400) and stay readable; the rest of the
// folder lists normally (no readdir batch rejected with EIO).
TEST_F(DaemonTest, HostileNamesAreEscapedNotFatal) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  const std::string src = tmp_ / "hostile-src";
  run_ok("mkdir -p " + q(src) + " && echo slash > " + q(src + "/slashXname") + " && echo nul > " +
         q(src + "/nulXXname") + " && echo plain > " + q(src + "/plain.txt") + " && echo real > " +
         q(src + "/slash\u2215name"));
  const std::string img = tmp_ / "hostile.img";
  run_ok("mkfs.ext4 -q -F -O ^metadata_csum,^dir_index -d " + q(src) + " " + q(img) + " 8M");
  // Patch the names inside the directory block: "slashXname" -> "slash/name",
  // "nulXXname" -> "nul\0Xname".
  auto patch = [&](const std::string& needle, int at, const std::string& printf_byte) {
    CommandResult off = run("grep -obUa " + q(needle) + " " + q(img) + " | head -1 | cut -d: -f1");
    ASSERT_EQ(off.status, 0);
    ASSERT_FALSE(trim(off.output).empty()) << needle << " not found in the image";
    run_ok("printf '" + printf_byte + "' | dd of=" + q(img) + " bs=1 seek=$((" + trim(off.output) + "+" +
           std::to_string(at) + ")) conv=notrunc status=none");
  };
  patch("slashXname", 5, "/");
  patch("nulXXname", 3, "\\000");
  const std::string before = sha256_of(img);
  ASSERT_EQ(cli("catalog add --id hostile-names --format raw --path " + q(img)).status, 0);
  START_DAEMON();
  CommandResult ls = run("ls " + q(path("hostile-names/disk")));
  EXPECT_EQ(ls.status, 0) << ls.output;
  EXPECT_NE(ls.output.find("slash\u2215name"), std::string::npos) << ls.output;
  EXPECT_NE(ls.output.find("nul\u2400Xname"), std::string::npos) << ls.output;
  EXPECT_NE(ls.output.find("plain.txt"), std::string::npos) << ls.output;
  // A real file already shows as "slash∕name": the escaped one moves aside, both stay reachable.
  EXPECT_EQ(run_ok("cat " + q(path("hostile-names/disk/slash\u2215name"))), "real\n");
  const std::string moved = trim(run_ok("ls " + q(path("hostile-names/disk")) + " | grep '^slash\u2215name\ufffd'"));
  EXPECT_FALSE(moved.empty()) << ls.output;
  EXPECT_EQ(run_ok("cat " + q(path("hostile-names/disk/" + moved))), "slash\n");
  EXPECT_EQ(run_ok("cat " + q(path("hostile-names/disk/nul\u2400Xname"))), "nul\n");
  CommandResult copy = run("cp -a " + q(path("hostile-names/disk")) + " " + q(tmp_ / "hostile-copy"));
  EXPECT_EQ(copy.status, 0) << copy.output;
  EXPECT_EQ(sha256_of(img), before);
}

// An open folder lists one version of its backup: when the image changes
// between two of its pages (here: rewritten while the backup is detached
// idle, which the detach notices), the rest of the listing is refused with
// EIO instead of continuing from the new version; opened again, the folder
// lists the new version.
TEST_F(DaemonTest, AFolderListedAcrossAnImageChangeGivesEioNotTwoVersions) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  auto image_of = [&](const std::string& name, const std::string& prefix) {
    const std::string src = tmp_ / (name + "-src");
    run_ok("mkdir -p " + q(src + "/folder") + " && cd " + q(src + "/folder") + " && python3 -c '" +
           "[open(\"" + prefix + "%04d\" % i, \"w\").close() for i in range(3000)]'");
    const std::string img = tmp_ / (name + ".img");
    run_ok("mkfs.ext4 -q -F -b 4096 -d " + q(src) + " " + q(img) + " 32M");
    return img;
  };
  const std::string old_img = image_of("old", "old");
  const std::string new_img = image_of("new", "new");
  const std::string served = tmp_ / "served.img";
  run_ok("cp " + q(old_img) + " " + q(served));
  ASSERT_EQ(cli("catalog add --id changing-folder --format raw --path " + q(served)).status, 0);
  START_DAEMON({"--idle-timeout", "1"});
  const std::string folder = vol("changing-folder", "disk") + "/folder";
  // Reads the first entries, waits until the image is replaced and the
  // backup detached, then reads on.
  const std::string script =
      "import os, sys, time\n"
      "it = os.scandir(sys.argv[1])\n"
      "first = [next(it).name for _ in range(10)]\n"
      "print('first', all(n.startswith('old') for n in first), flush=True)\n"
      "while not os.path.exists(sys.argv[2]): time.sleep(0.05)\n"
      "try:\n"
      "    rest = [e.name for e in it]\n"
      "    print('rest', len(rest), sum(n.startswith('new') for n in rest))\n"
      "except OSError as e:\n"
      "    print('error', e.errno)\n";
  test::write_file(tmp_ / "list.py", script);
  const std::string go = tmp_ / "go";
  CommandResult listing;
  std::thread lister([&] { listing = run("python3 " + q(tmp_ / "list.py") + " " + q(folder) + " " + q(go)); });
  ASSERT_TRUE(wait_for([&] { return count_events(log(), "attach", {{"backup", "changing-folder"}}) >= 1; }, 10s));
  run_ok("sleep 0.5; cat " + q(new_img) + " > " + q(served) + " && sync");
  EXPECT_TRUE(wait_for([&] { return count_events(log(), "detach", {{"backup", "changing-folder"}}) >= 1; }, 10s))
      << log();
  run_ok("sync; echo 3 > /proc/sys/vm/drop_caches; touch " + q(go));
  lister.join();
  EXPECT_NE(listing.output.find("first True"), std::string::npos) << listing.output;
  EXPECT_NE(listing.output.find("error 5"), std::string::npos) << "the listing went on: " << listing.output << log();
  // Opened again: the new version, whole.
  EXPECT_TRUE(wait_for([&] { return run("ls " + q(folder) + " | grep -c '^new'").output == "3000\n"; }, 10s))
      << run("ls " + q(folder) + " | head -3").output << log();
}

// A folder whose listing is bigger than any one reply a worker may send
// the daemon (16 MiB: worker_client.cpp) lists completely, a page at a
// time, with and without attributes: a hostile image cannot make the
// daemon, which serves every backup, hold a folder it made up.
TEST_F(DaemonTest, AFolderBiggerThanOneReplyListsAPageAtATime) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  constexpr int kEntries = 80000;  // x 250-byte names: about 20 MiB of names alone
  // Made through the kernel (mkfs -d links names one by one, quadratic in a
  // folder): hard links to two files, so the folder costs no inode table.
  const std::string img = tmp_ / "wide.img";
  const std::string mnt = tmp_ / "wide-mnt";
  run_ok("mkfs.ext4 -q -F -b 4096 " + q(img) + " 64M && mkdir -p " + q(mnt) + " && mount -o loop " + q(img) + " " + q(mnt));
  CommandResult made = run("cd " + q(mnt) + " && mkdir wide && touch a b && python3 -c 'import os\n"
                           "for i in range(" + std::to_string(kEntries) + "): os.link(\"ab\"[i % 2], "
                           "\"wide/\" + \"n\" * 244 + \"%06d\" % i)' && cd wide && ls -f | LC_ALL=C sort | sha256sum");
  run_ok("umount " + q(mnt));
  ASSERT_EQ(made.status, 0) << made.output;
  const std::string want = made.output;
  ASSERT_EQ(cli("catalog add --id wide-folder --format raw --path " + q(img)).status, 0);
  START_DAEMON();
  const std::string wide = path("wide-folder/disk/wide");
  EXPECT_EQ(run_ok("ls -f " + q(wide) + " | LC_ALL=C sort | sha256sum"), want);
  // ls -l: readdirplus, pages with every entry's attributes.
  CommandResult long_listing = run("ls -l " + q(wide) + " | grep -c '^-r'");  // two files, 80,000 names
  EXPECT_EQ(trim(long_listing.output), std::to_string(kEntries)) << log();
  const std::string last = std::string(244, 'n') + "0" + std::to_string(kEntries - 1);  // %06d
  EXPECT_EQ(run("stat -c %s " + q(wide + "/" + last)).output, "0\n");
  EXPECT_EQ(count_events(log(), "worker_failed"), 0) << log();
}

}  // namespace
}  // namespace sendense::test
