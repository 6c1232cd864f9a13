// Catalog migration 2: each volume's journal report (written at attach,
// read by `status`), and the upgrade of a catalog made before it.
#include <gtest/gtest.h>

#include "catalog/catalog.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

BackupRecord backup(const std::string& id) {
  BackupRecord b;
  b.id = id;
  b.vm = "vm1";
  b.image_path = "/repo/" + id + ".raw";
  b.format = "raw";
  b.kind = "full";
  b.created_at = 1767268800;
  return b;
}

VolumeRecord volume(const std::string& backup_id, const std::string& state, uint64_t transactions) {
  VolumeRecord v;
  v.backup_id = backup_id;
  v.name = "part1";
  v.fs_type = "ext4";
  v.offset = 1048576;
  v.length = 1 << 20;
  v.journal_state = state;
  v.journal_transactions = transactions;
  v.journal_blocks = transactions * 7;
  v.journal_note = "note " + state;
  return v;
}

TEST(CatalogJournal, EnsureVolumeStoresTheLastJournalReport) {
  test::TempDir dir;
  Catalog c(dir / "c.db");
  c.upsert_backup(backup("b1"));
  const int64_t id = c.ensure_volume(volume("b1", "replayed", 3));
  auto vols = c.volumes_of("b1");
  ASSERT_EQ(vols.size(), 1u);
  EXPECT_EQ(vols[0].journal_state, "replayed");
  EXPECT_EQ(vols[0].journal_transactions, 3u);
  EXPECT_EQ(vols[0].journal_blocks, 21u);
  EXPECT_EQ(vols[0].journal_note, "note replayed");
  // Re-attached with --no-replay: same id, the new report.
  EXPECT_EQ(c.ensure_volume(volume("b1", "skipped", 0)), id);
  vols = c.list_volumes();
  ASSERT_EQ(vols.size(), 1u);
  EXPECT_EQ(vols[0].journal_state, "skipped");
  EXPECT_EQ(vols[0].journal_transactions, 0u);
  EXPECT_EQ(vols[0].journal_note, "note skipped");
}

// A catalog from before migration 2 (its columns dropped again, version 2
// forgotten) is upgraded in place: volume ids kept, reports empty.
TEST(CatalogJournal, CatalogBeforeMigration2IsUpgraded) {
  SENDENSE_REQUIRE_TOOL("sqlite3");
  test::TempDir dir;
  const std::string db = dir / "c.db";
  int64_t id = 0;
  {
    Catalog c(db);
    c.upsert_backup(backup("b1"));
    id = c.ensure_volume(volume("b1", "replayed", 3));
  }
  test::run_ok("sqlite3 " + test::shell_quote(db) +
               " 'ALTER TABLE volumes DROP COLUMN journal_state; ALTER TABLE volumes DROP COLUMN journal_transactions;"
               " ALTER TABLE volumes DROP COLUMN journal_blocks; ALTER TABLE volumes DROP COLUMN journal_note;"
               " DELETE FROM schema_migrations WHERE version = 2;'");
  Catalog c(db);
  EXPECT_EQ(c.schema_version(), Catalog::latest_schema_version());
  auto vols = c.volumes_of("b1");
  ASSERT_EQ(vols.size(), 1u);
  EXPECT_EQ(vols[0].id, id);
  EXPECT_EQ(vols[0].journal_state, "");
  EXPECT_EQ(vols[0].journal_transactions, 0u);
}

}  // namespace
}  // namespace sendense
