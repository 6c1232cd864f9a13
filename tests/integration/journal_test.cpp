// Journal replay through the real daemon on a real FUSE mount: the
// crash-consistent images of tests/fixtures/make-journal-fixtures.sh are
// served as backups; the tree must equal the e2fsck'd copy read by the
// kernel (read-only loop mount), compared with rsync --checksum; --no-replay
// shows the stored state; status/inspect --json report what the journal
// held, counted independently from `debugfs logdump`; images never change.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

// What debugfs's own journal parser finds in the log: committed transactions
// and the filesystem blocks they leave replayed (a revoke record in
// transaction R cancels copies in transactions <= R).
struct Logdump {
  uint64_t transactions = 0;
  uint64_t blocks = 0;
};

Logdump logdump(const std::string& image) {
  std::istringstream in(run_ok("debugfs -R 'logdump -a' " + q(image) + " 2>/dev/null"));
  std::string line;
  std::map<uint64_t, std::vector<uint64_t>> tags;  // sequence -> fs blocks
  std::map<uint64_t, uint64_t> revoked;            // fs block -> newest revoking sequence
  std::set<uint64_t> committed;
  uint64_t sequence = 0;
  while (std::getline(in, line)) {
    unsigned long long seq = 0, type = 0, block = 0, at = 0;
    if (std::sscanf(line.c_str(), "Found expected sequence %llu, type %llu", &seq, &type) == 2) {
      sequence = seq;
      if (type == 2) committed.insert(seq);
    } else if (std::sscanf(line.c_str(), "  FS block %llu logged at journal block %llu", &block, &at) == 2) {
      tags[sequence].push_back(block);
    } else if (std::sscanf(line.c_str(), "  Revoke FS block %llu", &block) == 1) {
      revoked[block] = std::max<uint64_t>(revoked[block], sequence);
    }
  }
  std::set<uint64_t> replayed;
  for (const auto& [seq, blocks] : tags) {
    if (!committed.count(seq)) continue;
    for (uint64_t b : blocks) {
      auto r = revoked.find(b);
      if (r != revoked.end() && committed.count(r->second) && r->second >= seq) continue;
      replayed.insert(b);
    }
  }
  return {committed.size(), replayed.size()};
}

class JournalDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = fixtures_dir();
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("journal fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/ext4.raw")) << "run `ctest -R make_journal_fixtures` first";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    SENDENSE_REQUIRE_TOOL("rsync");
    mnt_ = work_ / "mnt";
    ::mkdir(mnt_.c_str(), 0755);
    catalog_ = work_ / "catalog.db";
    for (const std::string v : kVariants) {
      run_ok(q(cli_binary()) + " catalog add --id backup-" + v + " --path " + q(fx_ + "/" + v + ".raw") +
             " --format raw --vm journal --catalog " + q(catalog_));
      sums_[v] = sha256_of(fx_ + "/" + v + ".raw");
    }
  }

  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->stop(), "");
      const std::string log = daemon_->log();
      EXPECT_EQ(log.find("ERROR: AddressSanitizer"), std::string::npos) << log;
      EXPECT_EQ(log.find("runtime error:"), std::string::npos) << log;
    }
    for (const auto& [v, sum] : sums_) EXPECT_EQ(sha256_of(fx_ + "/" + v + ".raw"), sum) << v << " changed";
  }

  void start(const std::vector<std::string>& args) {
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, work_ / "daemon.log");
    const std::string problem = daemon_->start(args);
    ASSERT_EQ(problem, "");
  }

  // The e2fsck'd reference of `variant` as the kernel shows it.
  std::string mount_reference(const std::string& variant) {
    const std::string dir = work_ / ("ref-" + variant);
    ::mkdir(dir.c_str(), 0755);
    run_ok("mount -o ro,loop,noload " + q(fx_ + "/" + variant + ".ref.raw") + " " + q(dir));
    mounted_.push_back(dir);
    return dir;
  }

  ~JournalDaemonTest() override {
    for (const auto& d : mounted_) run("umount " + q(d) + " || umount -l " + q(d));
  }

  nlohmann::json volume_of(const nlohmann::json& volumes, const std::string& name) {
    for (const auto& v : volumes)
      if (v["name"] == name) return v;
    return nullptr;
  }

  static constexpr const char* kVariants[] = {"ext4", "ext3", "wrap", "revoke", "torn"};
  TempDir work_;
  std::string fx_, mnt_, catalog_;
  std::map<std::string, std::string> sums_;
  std::unique_ptr<RestoreDaemon> daemon_;
  std::vector<std::string> mounted_;
};

TEST_F(JournalDaemonTest, ReplayedTreeEqualsKernelViewOfE2fsckCopy) {
  start({});
  for (const std::string v : kVariants) {
    const std::string ref = mount_reference(v);
    const std::string served = mnt_ + "/backup-" + v + "/disk";
    ASSERT_TRUE(file_exists(served + "/docs")) << v << "\n" << daemon_->log();
    const CommandResult r = run(rsync_compare_command(served, ref, false));
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output, "") << v << ": rsync -aHAX --checksum --dry-run sees differences";
  }
  // The last change before each snapshot (only in the journal) is there,
  // except where the fixture tore its commit block.
  EXPECT_TRUE(file_exists(mnt_ + "/backup-ext4/disk/last-change.txt"));
  EXPECT_FALSE(file_exists(mnt_ + "/backup-torn/disk/last-change.txt"));
  EXPECT_EQ(read_file(mnt_ + "/backup-ext3/disk/last-change.txt"), "the last change before the backup\n");

  // status reads the catalog (a separate process): each volume's journal.
  const auto status = nlohmann::json::parse(run_ok(q(cli_binary()) + " status --json --catalog " + q(catalog_)));
  std::set<std::string> seen;
  for (const auto& m : status) {
    const std::string backup = m["backup"];
    const std::string v = backup.substr(std::string("backup-").size());
    const auto vol = volume_of(m["volumes"], "disk");
    ASSERT_FALSE(vol.is_null()) << m.dump();
    const auto& j = vol["journal"];
    EXPECT_EQ(j["state"], "replayed") << j.dump();
    // (torn: logdump stops at the zeroed commit block too.)
    const Logdump want = logdump(fx_ + "/" + v + ".raw");
    EXPECT_EQ(j["transactions"], want.transactions) << v;
    EXPECT_EQ(j["blocks"], want.blocks) << v;
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), std::size(kVariants)) << status.dump();
  const std::string log = daemon_->log();
  EXPECT_NE(log.find("journal volume=backup-ext4/disk state=replayed"), std::string::npos) << log;

  // inspect (no daemon, no catalog) says the same.
  const auto inspect = nlohmann::json::parse(run_ok(q(cli_binary()) + " inspect --json " + q(fx_ + "/ext4.raw")));
  const Logdump want = logdump(fx_ + "/ext4.raw");
  EXPECT_EQ(inspect["volumes"][0]["journal"]["state"], "replayed");
  EXPECT_EQ(inspect["volumes"][0]["journal"]["transactions"], want.transactions);
  EXPECT_EQ(inspect["volumes"][0]["journal"]["blocks"], want.blocks);
  const std::string text = run_ok(q(cli_binary()) + " inspect " + q(fx_ + "/ext4.raw"));
  EXPECT_NE(text.find("replayed " + std::to_string(want.transactions) + " tx, " + std::to_string(want.blocks) +
                      " blocks"),
            std::string::npos)
      << text;
}

TEST_F(JournalDaemonTest, NoReplayShowsTheStoredState) {
  start({"--no-replay"});
  for (const std::string v : {"ext4", "ext3"}) {
    const std::string served = mnt_ + "/backup-" + v + "/disk";
    ASSERT_TRUE(file_exists(served + "/docs")) << v << "\n" << daemon_->log();
    EXPECT_FALSE(file_exists(served + "/last-change.txt")) << v;
    // The same as debugfs (which never replays) lists at the root.
    std::string listing = run_ok("debugfs -R 'ls -p /' " + q(fx_ + "/" + v + ".raw") + " 2>/dev/null");
    std::set<std::string> want;
    std::istringstream in(listing);
    std::string line;
    while (std::getline(in, line)) {
      // /ino/mode/uid/gid/name/size/
      std::vector<std::string> f;
      std::string field;
      std::istringstream ls(line);
      while (std::getline(ls, field, '/')) f.push_back(field);
      if (f.size() >= 6 && f[5] != "." && f[5] != ".." && !f[5].empty()) want.insert(f[5]);
    }
    std::set<std::string> got;
    for (const auto& e : std::filesystem::directory_iterator(served)) got.insert(e.path().filename().string());
    EXPECT_EQ(got, want) << v;
  }
  const auto inspect =
      nlohmann::json::parse(run_ok(q(cli_binary()) + " inspect --json --no-replay " + q(fx_ + "/ext4.raw")));
  EXPECT_EQ(inspect["volumes"][0]["journal"]["state"], "skipped");
  const auto status = nlohmann::json::parse(run_ok(q(cli_binary()) + " status --json --catalog " + q(catalog_)));
  bool found = false;
  for (const auto& m : status)
    if (m["backup"] == "backup-ext4") {
      found = true;
      EXPECT_EQ(volume_of(m["volumes"], "disk")["journal"]["state"], "skipped") << m.dump();
    }
  EXPECT_TRUE(found) << status.dump();
  const std::string text = run_ok(q(cli_binary()) + " status --catalog " + q(catalog_));
  EXPECT_NE(text.find("journal skipped"), std::string::npos) << text;
}

}  // namespace
}  // namespace sendense::test
