// Integration: the real sendense-restorefs daemon serving the LVM and
// multi-disk fixtures of tests/fixtures/make-lvm-fixtures.sh (CTest fixture
// `make_lvm_fixtures`) on a real FUSE mount, compared with the source trees
// by rsync. One daemon per test, a fresh catalog made by `catalog import`;
// after each test the daemon must stop cleanly, its log must hold no
// sanitizer report, and the images must keep their checksums.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/daemon_harness.h"

namespace sendense::test {
namespace {

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  std::istringstream in(run("ls -A " + q(dir)).output);
  std::string name;
  while (std::getline(in, name))
    if (!name.empty()) out.insert(name);
  return out;
}

class LvmDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = fixtures_dir();
    ASSERT_TRUE(file_exists(fx_ + "/repo.sha256"))
        << "no fixtures in " << fx_ << ": run `ctest -R make_lvm_fixtures` (or tests/fixtures/make-lvm-fixtures.sh)";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    SENDENSE_REQUIRE_TOOL("rsync");
    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    run_ok("mkdir -p " + q(mnt_));
    CommandResult r = cli("catalog import " + q(fx_ + "/repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
    ASSERT_EQ(daemon_->start({}), "") << "starting the daemon";
  }

  void TearDown() override {
    if (!daemon_) return;
    EXPECT_EQ(daemon_->stop(), "") << "stopping the daemon with SIGTERM";
    EXPECT_FALSE(is_mounted(mnt_)) << "mount left behind";
    const std::string log = daemon_->log();
    for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
      EXPECT_EQ(log.find(bad), std::string::npos) << "daemon log holds \"" << bad << "\"";
    CommandResult sums = run("cd " + q(fx_ + "/repo") + " && sha256sum --quiet -c ../repo.sha256");
    EXPECT_EQ(sums.status, 0) << "an image changed:\n" << sums.output;
    if (HasFailure()) std::cerr << "---- daemon log ----\n" << log;
  }

  CommandResult cli(const std::string& args) { return run(q(cli_binary()) + " " + args + " --catalog " + q(catalog_)); }

  // rsync between a served volume and the tree it was made from prints nothing.
  void expect_same_tree(const std::string& backup, const std::string& volume, const std::string& tree) {
    const std::string served = mnt_ + "/" + backup + "/" + volume;
    CommandResult r = run(rsync_compare_command(served, fx_ + "/src/" + tree, /*skip_lost_found=*/true));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, "") << backup << "/" << volume << " differs from src/" << tree;
    // And the other way round: nothing in the source is missing from the volume.
    r = run(rsync_compare_command(fx_ + "/src/" + tree, served, /*skip_lost_found=*/true));
    EXPECT_EQ(r.output, "") << "src/" << tree << " vs " << backup << "/" << volume;
  }

  std::string fx_;
  TempDir tmp_;
  std::string mnt_;
  std::string catalog_;
  std::unique_ptr<RestoreDaemon> daemon_;
};

TEST_F(LvmDaemonTest, UbuntuLikeRootLvNextToItsBootPartition) {
  // The PV partition and the thin LVs are not volumes of the tree.
  EXPECT_EQ(listing(mnt_ + "/lvm-ubuntu"), (std::set<std::string>{"part1", "lvm-ubuntu--vg-ubuntu--lv"}));
  expect_same_tree("lvm-ubuntu", "part1", "ubuntu-boot");
  expect_same_tree("lvm-ubuntu", "lvm-ubuntu--vg-ubuntu--lv", "ubuntu-root");
  // The thin LVs are logged, with their type, as not supported.
  const std::string log = daemon_->log();
  EXPECT_NE(log.find("volume=lvm-ubuntu--vg-thin1"), std::string::npos) << log;
  EXPECT_NE(log.find("thin LV: not supported yet"), std::string::npos) << log;
}

TEST_F(LvmDaemonTest, MultiDiskBackupWithAVgAcrossBothDisks) {
  EXPECT_EQ(listing(mnt_ + "/lvm-multi"), (std::set<std::string>{"disk0-part1", "lvm-data-span", "lvm-data-stripe"}));
  expect_same_tree("lvm-multi", "disk0-part1", "multi-small");
  expect_same_tree("lvm-multi", "lvm-data-stripe", "stripe");
  expect_same_tree("lvm-multi", "lvm-data-span", "span");
  // The 24 MiB file lies across the disk boundary: read with cp as a client would.
  run_ok("cp " + q(mnt_ + "/lvm-multi/lvm-data-span/huge.bin") + " " + q(tmp_ / "huge.bin"));
  EXPECT_EQ(sha256_of(tmp_ / "huge.bin"), sha256_of(fx_ + "/src/span/huge.bin"));
  CommandResult st = cli("status --json");
  ASSERT_EQ(st.status, 0) << st.output;
}

TEST_F(LvmDaemonTest, TwoBackupsWithTheSameVgNameAttachedAtOnce) {
  // Both attached in parallel, then compared while both stay attached.
  std::thread a([&] { run("ls " + q(mnt_ + "/lvm-twin-a/lvm-vg0-lv0")); });
  std::thread b([&] { run("ls " + q(mnt_ + "/lvm-twin-b/lvm-vg0-lv0")); });
  a.join();
  b.join();
  expect_same_tree("lvm-twin-a", "lvm-vg0-lv0", "twin-a");
  expect_same_tree("lvm-twin-b", "lvm-vg0-lv0", "twin-b");
  EXPECT_EQ(read_file(mnt_ + "/lvm-twin-a/lvm-vg0-lv0/which"), "this is twin a\n");
  EXPECT_EQ(read_file(mnt_ + "/lvm-twin-b/lvm-vg0-lv0/which"), "this is twin b\n");
  CommandResult st = run(q(cli_binary()) + " status --json --catalog " + q(catalog_) + " 2>/dev/null");
  ASSERT_EQ(st.status, 0) << st.output;
  std::set<std::string> attached;
  for (const auto& m : nlohmann::json::parse(st.output)) attached.insert(m["backup"].get<std::string>());
  EXPECT_TRUE(attached.contains("lvm-twin-a") && attached.contains("lvm-twin-b")) << st.output;
}

TEST_F(LvmDaemonTest, DamagedMetadataLeavesTheOtherVolumesServed) {
  EXPECT_EQ(listing(mnt_ + "/lvm-damaged"), (std::set<std::string>{"part1"}));
  expect_same_tree("lvm-damaged", "part1", "damaged-boot");
  CommandResult r = run("stat " + q(mnt_ + "/lvm-damaged/lvm-dmg-lv"));
  EXPECT_NE(r.status, 0);
  const std::string log = daemon_->log();
  bool clear = false;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    clear |= line.find("volume_layout") != std::string::npos && line.find("backup=lvm-damaged") != std::string::npos &&
             line.find("bad checksum") != std::string::npos;
  EXPECT_TRUE(clear) << "no volume_layout line naming the backup and the bad checksum:\n" << log;
  // The other backups are unaffected.
  expect_same_tree("lvm-twin-a", "lvm-vg0-lv0", "twin-a");
}

TEST_F(LvmDaemonTest, InspectListsThinLvsAsNotSupported) {
  CommandResult r = run(q(cli_binary()) + " inspect --json " + q(fx_ + "/repo/lvm-ubuntu.qcow2") + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& v : j["volumes"]) by_name[v["name"].get<std::string>()] = v;
  ASSERT_TRUE(by_name.contains("lvm-ubuntu--vg-thin1")) << r.output;
  EXPECT_EQ(by_name["lvm-ubuntu--vg-thin1"]["note"], "thin LV: not supported yet");
  EXPECT_EQ(by_name["lvm-ubuntu--vg-thin1"]["has_reader"], false);
  EXPECT_EQ(by_name["lvm-ubuntu--vg-pool"]["note"], "thin-pool LV: not supported yet");
  EXPECT_EQ(by_name["part2"]["note"], "lvm-pv of VG ubuntu-vg");
  EXPECT_EQ(by_name["lvm-ubuntu--vg-ubuntu--lv"]["fs_type"], "ext4");
  EXPECT_EQ(by_name["lvm-ubuntu--vg-ubuntu--lv"]["has_reader"], true);
  // Both disks of the multi-disk backup at once.
  r = run(q(cli_binary()) + " inspect " + q(fx_ + "/repo/lvm-multi-disk0.qcow2") + " " +
          q(fx_ + "/repo/lvm-multi-disk1.qcow2") + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* name : {"disk0-part1", "disk0-part2", "disk1-disk", "lvm-data-span", "lvm-data-stripe"})
    EXPECT_NE(r.output.find(name), std::string::npos) << name << "\n" << r.output;
}

}  // namespace
}  // namespace sendense::test
