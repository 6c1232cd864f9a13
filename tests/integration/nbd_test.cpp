// Integration: backups read through qemu-nbd (qcow2 zstd, zstd incremental
// over a plain full, extended L2, VMDK, VHDX) served by the real
// sendense-restorefs on a real FUSE mount, fixtures from
// tests/fixtures/make-nbd-fixtures.sh (CTest fixture `nbd_images`).
//
// Each test: a fresh catalog (the fixture repository imported with the CLI)
// and mount point; afterwards the daemon is stopped with SIGTERM, must exit 0
// with no qemu-nbd of its own left, no sanitizer report in its log, and the
// images keep their checksums.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

using namespace std::chrono_literals;

class NbdDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = SENDENSE_NBD_FIXTURES_DIR;
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env"))
        << "no fixtures in " << fx_ << ": run `ctest -R make_nbd_fixtures` (or tests/fixtures/make-nbd-fixtures.sh)";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    SENDENSE_REQUIRE_TOOL("qemu-nbd");
    SENDENSE_REQUIRE_TOOL("rsync");
    manifest_ = std::make_unique<Manifest>(fx_ + "/manifest.env");
    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    CommandResult r = cli("catalog import " + q(fx_ + "/repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
  }

  void TearDown() override {
    if (!daemon_) return;
    const pid_t pid = daemon_->pid();
    EXPECT_EQ(daemon_->stop(), "") << "stopping the daemon with SIGTERM";
    if (pid > 0) {
      EXPECT_EQ(servers_of(pid), "") << "qemu-nbd left after SIGTERM";
    }
    const std::string log = daemon_->log();
    for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
      EXPECT_EQ(log.find(bad), std::string::npos) << "daemon log holds \"" << bad << "\"";
    CommandResult sums = run("cd " + q(fx_ + "/repo") + " && sha256sum --quiet -c ../repo.sha256");
    EXPECT_EQ(sums.status, 0) << "an image changed:\n" << sums.output;
    if (HasFailure()) std::cerr << "---- daemon log ----\n" << log.substr(log.size() > 8000 ? log.size() - 8000 : 0);
  }

  std::string m(const std::string& key) const { return (*manifest_)[key]; }
  CommandResult cli(const std::string& args) { return run(q(cli_binary()) + " " + args + " --catalog " + q(catalog_)); }
  void start(const std::vector<std::string>& args = {}) { ASSERT_EQ(daemon_->start(args), "") << "starting the daemon"; }
  std::string vol(const std::string& id) const { return mnt_ + "/" + id + "/part1"; }

  // qemu-nbd processes of daemon `pid` (their socket folder carries its pid),
  // as `pgrep -af` lines; "" when none.
  static std::string servers_of(pid_t pid) {
    return run("pgrep -af -- " + q("[q]emu-nbd-" + std::to_string(pid) + "-")).output;
  }
  std::string servers() const { return servers_of(daemon_->pid()); }

  // rsync's view of a mounted volume against its source tree: nothing to do.
  void expect_same_tree(const std::string& id, const std::string& src) {
    SCOPED_TRACE(id);
    CommandResult r = run(rsync_compare_command(vol(id), src, /*skip_lost_found=*/true));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, "") << "rsync -aHAX --checksum --itemize-changes --dry-run sees differences";
  }

  // image_reader of the attach of `id` in `status --json` ("" if not attached).
  std::string status_reader(const std::string& id) {
    CommandResult st = cli("status --json");
    EXPECT_EQ(st.status, 0) << st.output;
    for (const auto& row : nlohmann::json::parse(st.output, nullptr, false))
      if (row.value("backup", "") == id && row.value("status", "") == "mounted" && row["image_reader"].is_string())
        return row["image_reader"].get<std::string>();
    return "";
  }

  TempDir tmp_;
  std::string fx_, mnt_, catalog_;
  std::unique_ptr<Manifest> manifest_;
  std::unique_ptr<RestoreDaemon> daemon_;
};

TEST_F(NbdDaemonTest, EveryFormatBrowsesAsItsSourceTree) {
  ASSERT_NO_FATAL_FAILURE(start());
  expect_same_tree(m("PLAIN_ID"), fx_ + "/src");
  expect_same_tree(m("INC_ID"), fx_ + "/src2");
  for (const std::string key : {"ZSTD_ID", "L2_ID", "VMDK_ID", "VMDK2_ID", "VHDX_ID"}) expect_same_tree(m(key), fx_ + "/src");
  // qcow2 (plain, zstd, extended L2) is read by our own reader; VMDK and
  // VHDX by qemu-nbd, one process per attached backup.
  for (const auto& id : manifest_->list("NATIVE_IDS")) EXPECT_EQ(status_reader(id), "qcow2") << id;
  for (const auto& id : manifest_->list("QEMU_IDS")) EXPECT_EQ(status_reader(id), "qemu-nbd") << id;
  for (const auto& id : manifest_->list("NATIVE_IDS")) EXPECT_EQ(servers().find(id), std::string::npos) << id;
  const std::string procs = servers();
  for (const auto& id : manifest_->list("QEMU_IDS")) EXPECT_NE(procs.find(id), std::string::npos) << id << "\n" << procs;
  // The table view names the reader too.
  CommandResult st = cli("status");
  EXPECT_NE(st.output.find("READER"), std::string::npos) << st.output;
  EXPECT_NE(st.output.find("qemu-nbd"), std::string::npos) << st.output;
  // The extent of the twoGbMaxExtentSparse VMDK is not a backup of its own.
  EXPECT_EQ(run("ls " + q(mnt_)).output.find("-s001"), std::string::npos);
}

TEST_F(NbdDaemonTest, InspectShowsTheReader) {
  for (const auto& [key, reader] : std::vector<std::pair<std::string, std::string>>{
           {"PLAIN_ID", "qcow2"}, {"INC_ID", "qcow2"}, {"L2_ID", "qcow2"}, {"VHDX_ID", "qemu-nbd"}}) {
    std::string image;
    for (const auto& e : std::filesystem::recursive_directory_iterator(fx_ + "/repo"))
      if (e.path().stem() == m(key)) image = e.path().string();
    ASSERT_FALSE(image.empty()) << key;
    CommandResult r = run(q(cli_binary()) + " inspect --json " + q(image));
    ASSERT_EQ(r.status, 0) << r.output;
    const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
    EXPECT_EQ(j["reader"], reader) << key;
  }
}

TEST_F(NbdDaemonTest, IdleDetachEndsQemuNbd) {
  ASSERT_NO_FATAL_FAILURE(start({"--idle-timeout", "2"}));
  const std::string id = m("VMDK_ID");
  EXPECT_EQ(run_ok("sha256sum < " + q(vol(id) + "/data/200000")), run_ok("sha256sum < " + q(fx_ + "/src/data/200000")));
  EXPECT_NE(servers().find(id), std::string::npos) << "no qemu-nbd for " << id;
  EXPECT_TRUE(wait_for([&] { return daemon_->log().find("reason=idle") != std::string::npos; }, 20s)) << "no idle detach";
  EXPECT_TRUE(wait_for([&] { return servers().empty(); }, 10s)) << "qemu-nbd still runs after the idle detach:\n"
                                                                 << servers();
  // And it comes back on the next access.
  run("sync; echo 3 > /proc/sys/vm/drop_caches");
  EXPECT_EQ(run_ok("sha256sum < " + q(vol(id) + "/data/4097")), run_ok("sha256sum < " + q(fx_ + "/src/data/4097")));
}

TEST_F(NbdDaemonTest, EvictionEndsQemuNbd) {
  ASSERT_NO_FATAL_FAILURE(start({"--max-mounts", "1", "--idle-timeout", "600"}));
  const std::string first = m("VMDK_ID"), second = m("VHDX_ID");
  run_ok("ls " + q(vol(first)));
  EXPECT_NE(servers().find(first), std::string::npos);
  run_ok("ls " + q(vol(second)));
  EXPECT_TRUE(wait_for([&] { return servers().find(first) == std::string::npos; }, 10s))
      << "the evicted backup's qemu-nbd still runs:\n" << servers();
  EXPECT_NE(servers().find(second), std::string::npos) << servers();
}

TEST_F(NbdDaemonTest, ShutdownEndsQemuNbd) {
  ASSERT_NO_FATAL_FAILURE(start());
  run_ok("ls " + q(vol(m("VMDK_ID"))) + " " + q(vol(m("VHDX_ID"))));
  const pid_t pid = daemon_->pid();
  EXPECT_NE(servers_of(pid), "");
  EXPECT_EQ(daemon_->stop(), "");
  EXPECT_EQ(servers_of(pid), "") << "qemu-nbd left after SIGTERM";
  EXPECT_TRUE(run("ls -d /run/sendense-restore/qemu-nbd-" + std::to_string(pid) + "-* 2>/dev/null").output.empty())
      << "socket folder left after SIGTERM";
}

TEST_F(NbdDaemonTest, CrashTakesQemuNbdAlongAndRestartCleansUp) {
  ASSERT_NO_FATAL_FAILURE(start());
  run_ok("ls " + q(vol(m("VMDK_ID"))) + " " + q(vol(m("VMDK2_ID"))));
  const pid_t pid = daemon_->pid();
  ASSERT_NE(servers_of(pid), "");
  daemon_->kill_hard();
  // PR_SET_PDEATHSIG: the kernel kills them with the daemon.
  EXPECT_TRUE(wait_for([&] { return servers_of(pid).empty(); }, 10s)) << "qemu-nbd survived kill -9 of the daemon:\n"
                                                                      << servers_of(pid);
  const std::string leftovers = "ls -d /run/sendense-restore/qemu-nbd-" + std::to_string(pid) + "-* 2>/dev/null";
  // The next daemon removes the dead one's socket folders when it starts its first qemu-nbd.
  ASSERT_NO_FATAL_FAILURE(start());
  // The dead mount is in mountinfo until the new daemon replaces it: wait for its second "serving".
  auto servings = [&] {
    const std::string log = daemon_->log();
    size_t n = 0;
    for (size_t at = log.find(" serving "); at != std::string::npos; at = log.find(" serving ", at + 1)) ++n;
    return n;
  };
  ASSERT_TRUE(wait_for([&] { return servings() == 2; }, 15s)) << "the restarted daemon is not serving";
  expect_same_tree(m("VMDK_ID"), fx_ + "/src");
  EXPECT_EQ(run(leftovers).output, "") << "socket folders of the crashed daemon were not removed";
  EXPECT_EQ(status_reader(m("VMDK_ID")), "qemu-nbd");
}

// A backup qemu cannot serve fails alone, with qemu's reason, and leaves no process.
TEST_F(NbdDaemonTest, DamagedImageFailsAloneWithQemusReason) {
  const std::string repo = tmp_ / "badrepo";
  std::filesystem::create_directories(repo);
  run_ok("qemu-img create -q -f vhdx " + q(repo + "/broken.vhdx") + " 8M");
  run_ok("dd if=/dev/zero of=" + q(repo + "/broken.vhdx") + " bs=64k seek=1 count=4 conv=notrunc status=none");
  ASSERT_EQ(cli("catalog add --id broken --vm bad --path " + q(repo + "/broken.vhdx")).status, 0);
  ASSERT_NO_FATAL_FAILURE(start());
  CommandResult r = run("ls " + q(mnt_ + "/broken"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("Input/output error"), std::string::npos) << r.output;
  EXPECT_NE(daemon_->log().find("No valid VHDX header found"), std::string::npos) << "qemu's reason not logged";
  EXPECT_EQ(servers(), "");
  expect_same_tree(m("VHDX_ID"), fx_ + "/src");
}

}  // namespace
}  // namespace sendense::test
