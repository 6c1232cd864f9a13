// Multi-disk backups: the backup_disks table (migration 3, upgrades of an
// older catalog), `catalog import` grouping <id>-disk<K> images, `catalog
// add` with one --path per disk, and `inspect` over several images, all on
// real SQLite files and qemu-img images, the CLI run as a process.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

namespace fs = std::filesystem;
using test::run;
using test::run_ok;
using test::shell_quote;
using test::TempDir;

void sql(const std::string& db, const std::string& statements) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(h, statements.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(h);
}

BackupRecord backup(const std::string& id) {
  BackupRecord b;
  b.id = id;
  b.vm = "vm1";
  b.image_path = "/repo/" + id + "-disk0.qcow2";
  b.format = "qcow2";
  b.created_at = 1767268800;
  return b;
}

std::string image(const std::string& path, const std::string& size = "16M") {
  const bool raw = path.ends_with(".raw") || path.ends_with(".img");
  run_ok("qemu-img create -q -f " + std::string(raw ? "raw " : "qcow2 ") + shell_quote(path) + " " + size);
  return path;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

struct Cli {
  int status;
  std::string out;
  std::string err;
};

Cli cli(const TempDir& dir, const std::string& args) {
  const std::string out = dir / ".cli-out", err = dir / ".cli-err";
  auto r = run(std::string(SENDENSE_CLI) + " " + args + " >" + shell_quote(out) + " 2>" + shell_quote(err));
  return {r.status, test::read_file(out), test::read_file(err)};
}

// ---- catalog -----------------------------------------------------------------

TEST(BackupDisks, StoredInOrderAndDiskZeroIsTheImagePath) {
  TempDir dir;
  Catalog c(dir / "c.db");
  BackupRecord b = backup("m1");
  b.disks = {{b.image_path, "qcow2"}, {"/repo/m1-disk1.raw", "raw"}, {"/repo/m1-disk2.qcow2", "qcow2"}};
  c.upsert_backup(b);
  auto got = c.find_backup("m1");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->disks, b.disks);
  EXPECT_EQ(c.list_backups().front().disks, b.disks);

  // Fewer disks on update: the extra rows go.
  b.disks.pop_back();
  c.upsert_backup(b);
  EXPECT_EQ(c.find_backup("m1")->disks, b.disks);

  // A single-disk record as before: disks is its image.
  c.upsert_backup(backup("s1"));
  EXPECT_EQ(c.find_backup("s1")->disks, (std::vector<BackupDisk>{{"/repo/s1-disk0.qcow2", "qcow2"}}));

  // Disk 0 must be image_path; formats are checked.
  BackupRecord bad = backup("bad");
  bad.disks = {{"/repo/other.qcow2", "qcow2"}};
  EXPECT_THROW(c.upsert_backup(bad), Error);
  bad.disks = {{bad.image_path, "qcow2"}, {"/repo/x.vhd", "vhd"}};
  EXPECT_THROW(c.upsert_backup(bad), Error);

  // Removing the backup removes its disks.
  ASSERT_TRUE(c.remove_backup("m1"));
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "c.db").c_str(), &h), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM backup_disks WHERE backup_id = 'm1'", -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
}

TEST(BackupDisks, MigrationFillsDiskZeroOfExistingBackups) {
  TempDir dir;
  const std::string db = dir / "c.db";
  {
    Catalog c(db);
    c.upsert_backup(backup("old1"));
  }
  // Back to the schema before migration 3, as an older build left it.
  sql(db, "DROP TABLE backup_disks; DELETE FROM schema_migrations WHERE version = 3;");
  {
    Catalog c(db);
    EXPECT_EQ(c.schema_version(), Catalog::latest_schema_version());
    EXPECT_EQ(c.find_backup("old1")->disks, (std::vector<BackupDisk>{{"/repo/old1-disk0.qcow2", "qcow2"}}));
  }
  // A row an older build added after the migration (no backup_disks row) reads as one disk.
  sql(db, "DELETE FROM backup_disks");
  Catalog c(db);
  EXPECT_EQ(c.find_backup("old1")->disks.size(), 1u);
}

// ---- import ------------------------------------------------------------------

TEST(MultiDiskImport, GroupsDisksInOrder) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo";
  fs::create_directories(repo + "/web01");
  // Out of name order on purpose (disk10 sorts before disk2 by name).
  for (int k : {0, 1, 2, 10, 3, 4, 5, 6, 7, 8, 9})
    image(repo + "/web01/backup-web01-20260101120000-disk" + std::to_string(k) + (k == 2 ? ".raw" : ".qcow2"));
  image(repo + "/web01/single.qcow2");
  Catalog c(dir / "c.db");
  ImportReport r = import_repository(c, repo);
  EXPECT_TRUE(r.errors.empty()) << joined(r.errors);
  auto b = c.find_backup("backup-web01-20260101120000");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->vm, "web01");
  EXPECT_EQ(b->created_at, *parse_iso8601("2026-01-01T12:00:00Z"));
  ASSERT_EQ(b->disks.size(), 11u);
  for (size_t k = 0; k < 11; ++k)
    EXPECT_EQ(fs::path(b->disks[k].image_path).filename().string(),
              "backup-web01-20260101120000-disk" + std::to_string(k) + (k == 2 ? ".raw" : ".qcow2"));
  EXPECT_EQ(b->disks[2].format, "raw");
  EXPECT_EQ(b->image_path, b->disks[0].image_path);
  EXPECT_TRUE(c.find_backup("single"));
  EXPECT_FALSE(c.find_backup("backup-web01-20260101120000-disk0"));

  // Idempotent.
  r = import_repository(c, repo);
  EXPECT_TRUE(r.added.empty() && r.updated.empty()) << joined(r.added) << joined(r.updated);
}

TEST(MultiDiskImport, GapOrDuplicateDiskIsAnErrorNamingTheFiles) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo";
  fs::create_directories(repo);
  image(repo + "/gap-disk0.qcow2");
  image(repo + "/gap-disk2.qcow2");
  image(repo + "/dup-disk0.qcow2");
  image(repo + "/dup-disk1.qcow2");
  image(repo + "/dup-disk1.raw");
  image(repo + "/fine-disk0.qcow2");
  image(repo + "/fine-disk1.qcow2");
  Catalog c(dir / "c.db");
  const ImportReport r = import_repository(c, repo);
  ASSERT_EQ(r.errors.size(), 2u) << joined(r.errors);
  const std::string all = joined(r.errors);
  EXPECT_NE(all.find("'gap': disk 1 missing"), std::string::npos) << all;
  EXPECT_NE(all.find("gap-disk2.qcow2"), std::string::npos) << all;
  EXPECT_NE(all.find("'dup': disk 1 given by 2 files"), std::string::npos) << all;
  EXPECT_NE(all.find("dup-disk1.raw"), std::string::npos) << all;
  EXPECT_FALSE(c.find_backup("gap"));
  EXPECT_FALSE(c.find_backup("dup"));
  ASSERT_TRUE(c.find_backup("fine"));
  EXPECT_EQ(c.find_backup("fine")->disks.size(), 2u);
}

TEST(MultiDiskImport, IncrementalOfAMultiDiskBackupFindsItsParent) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo";
  fs::create_directories(repo);
  for (int k : {0, 1}) {
    const std::string base = "full-disk" + std::to_string(k) + ".qcow2";
    image(repo + "/" + base);
    run_ok("cd " + shell_quote(repo) + " && qemu-img create -q -f qcow2 -b " + base + " -F qcow2 inc-disk" +
           std::to_string(k) + ".qcow2");
  }
  Catalog c(dir / "c.db");
  const ImportReport r = import_repository(c, repo);
  EXPECT_TRUE(r.errors.empty()) << joined(r.errors);
  auto inc = c.find_backup("inc");
  ASSERT_TRUE(inc);
  EXPECT_EQ(inc->kind, "incremental");
  EXPECT_EQ(inc->parent_id, "full");
  EXPECT_EQ(inc->disks.size(), 2u);
}

// ---- CLI ---------------------------------------------------------------------

TEST(MultiDiskCli, AddWithOnePathPerDiskAndInspectSeveralImages) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  SENDENSE_REQUIRE_TOOL("sfdisk");
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  TempDir dir;
  const std::string d0 = dir / "vm-disk0.raw", d1 = dir / "vm-disk1.qcow2", db = dir / "c.db";
  run_ok("truncate -s 32M " + shell_quote(d0));
  run_ok("printf 'label: gpt\\n,,L\\n' | sfdisk -q " + shell_quote(d0));
  run_ok("mkfs.ext4 -q -F -E offset=1048576 " + shell_quote(d0) + " 30M");
  run_ok("truncate -s 16M " + shell_quote(dir / "d1.raw") + " && mkfs.ext4 -q -F " + shell_quote(dir / "d1.raw"));
  run_ok("qemu-img convert -O qcow2 " + shell_quote(dir / "d1.raw") + " " + shell_quote(d1));

  Cli r = cli(dir, "catalog add --id vm-b1 --path " + shell_quote(d0) + " --path " + shell_quote(d1) +
                       " --catalog " + shell_quote(db));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("2 disks"), std::string::npos) << r.out;
  r = cli(dir, "catalog list --json --catalog " + shell_quote(db));
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  ASSERT_EQ(j[0]["disks"].size(), 2u);
  EXPECT_EQ(j[0]["disks"][0]["format"], "raw");
  EXPECT_EQ(j[0]["disks"][1]["format"], "qcow2");
  EXPECT_EQ(j[0]["disks"][1]["path"], fs::canonical(d1).string());
  EXPECT_EQ(j[0]["path"], fs::canonical(d0).string());

  // The same image twice is a usage error.
  r = cli(dir, "catalog add --id vm-b2 --path " + shell_quote(d0) + " --path " + shell_quote(d0) + " --catalog " +
                   shell_quote(db));
  EXPECT_EQ(r.status, 2) << r.err;

  r = cli(dir, "inspect --json " + shell_quote(d0) + " " + shell_quote(d1));
  ASSERT_EQ(r.status, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["disks"].size(), 2u);
  std::vector<std::string> names;
  for (const auto& v : j["volumes"]) names.push_back(v["name"]);
  EXPECT_EQ(names, (std::vector<std::string>{"disk0-part1", "disk1-disk"}));
  EXPECT_EQ(j["volumes"][1]["disk"], 1);
  EXPECT_EQ(j["volumes"][1]["fs_type"], "ext4");

  // One image: names as they always were.
  r = cli(dir, "inspect --json " + shell_quote(d1));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["volumes"][0]["name"], "disk");
}

}  // namespace
}  // namespace sendense
