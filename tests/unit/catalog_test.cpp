// The catalog on real SQLite files, import over real qemu-img images, and the
// `sendense-restore` CLI run as a process.
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

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

// A second, plain connection for checking what is really on disk.
struct RawDb {
  explicit RawDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + path);
  }
  ~RawDb() { sqlite3_close_v2(db); }
  std::string text(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
  }
  sqlite3* db = nullptr;
};

BackupRecord backup(const std::string& id, const std::string& parent = {}) {
  BackupRecord b;
  b.id = id;
  b.vm = "vm1";
  b.image_path = "/repo/" + id + ".qcow2";
  b.format = "qcow2";
  b.parent_id = parent;
  b.kind = parent.empty() ? "full" : "incremental";
  b.created_at = 1767268800;  // 2026-01-01T12:00:00Z
  b.size = 4096;
  return b;
}

// ---- schema and storage ----------------------------------------------------

TEST(Catalog, MigrationsAppliedOnceAndReopenKeepsData) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  {
    Catalog c(db);
    EXPECT_EQ(c.schema_version(), Catalog::latest_schema_version());
    c.upsert_backup(backup("b1"));
  }
  {
    Catalog c(db);  // reopen: nothing re-applied, data kept
    EXPECT_EQ(c.schema_version(), Catalog::latest_schema_version());
    auto b = c.find_backup("b1");
    ASSERT_TRUE(b);
    EXPECT_EQ(b->vm, "vm1");
    EXPECT_EQ(b->created_at, 1767268800);
    EXPECT_EQ(b->status, "completed");
    EXPECT_GT(b->num, 0);
  }
  RawDb raw(db);
  // Numbers may have gaps (each feature branch owns its number): the highest is applied.
  EXPECT_EQ(raw.text("SELECT MAX(version) FROM schema_migrations"), std::to_string(Catalog::latest_schema_version()));
  EXPECT_EQ(raw.text("SELECT created_at FROM backup_jobs WHERE id = 'b1'"), "2026-01-01T12:00:00Z");
}

TEST(Catalog, WalModeAndForeignKeys) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  Catalog c(db);
  RawDb raw(db);
  EXPECT_EQ(raw.text("PRAGMA journal_mode"), "wal");  // persistent in the file
  c.upsert_backup(backup("b1"));
  EXPECT_TRUE(fs::exists(db + "-wal"));
}

TEST(Catalog, OpenErrorNamesTheFile) {
  TempDir dir;
  const std::string db = dir / "no/such/folder/catalog.db";
  try {
    Catalog c(db);
    FAIL() << "opened a catalog in a missing folder";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO);
    EXPECT_NE(std::string(e.what()).find(db), std::string::npos) << e.what();
  }
}

TEST(Catalog, NewerSchemaIsRefused) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  { Catalog c(db); }
  {
    RawDb raw(db);
    raw.text("INSERT INTO schema_migrations (version, applied_at) VALUES (999, '2030-01-01T00:00:00Z')");
  }
  EXPECT_THROW(Catalog c(db), Error);
}

TEST(Catalog, UpsertKeepsNumAndValidates) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  c.upsert_backup(backup("b1"));
  const int64_t num = c.find_backup("b1")->num;
  BackupRecord changed = backup("b1");
  changed.vm = "vm2";
  c.upsert_backup(changed);
  EXPECT_EQ(c.find_backup("b1")->num, num);
  EXPECT_EQ(c.find_backup("b1")->vm, "vm2");

  BackupRecord bad = backup("b2");
  bad.format = "vdi";
  EXPECT_THROW(c.upsert_backup(bad), Error);
  EXPECT_THROW(c.upsert_backup(backup("a/b")), Error);
  EXPECT_THROW(c.upsert_backup(backup("by-vm")), Error);
  EXPECT_THROW(c.upsert_backup(backup("b3", "no-such-parent")), Error);
  EXPECT_EQ(c.list_backups().size(), 1u);
}

TEST(Catalog, RemoveCascadesToVolumesAndMountsAndUnlinksChildren) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  c.upsert_backup(backup("full"));
  c.upsert_backup(backup("inc", "full"));
  c.ensure_volume({0, "full", "part1", "ext4", 1048576, 1 << 20});
  c.ensure_volume({0, "inc", "part1", "ext4", 1048576, 1 << 20});
  c.begin_mount("full", "/mnt/r", "userspace", 600);
  c.begin_mount("inc", "/mnt/r", "userspace", 600);

  EXPECT_TRUE(c.remove_backup("full"));
  EXPECT_FALSE(c.remove_backup("full"));
  EXPECT_TRUE(c.volumes_of("full").empty());
  EXPECT_EQ(c.volumes_of("inc").size(), 1u);
  auto mounts = c.list_mounts();
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].backup_id, "inc");
  auto inc = c.find_backup("inc");
  ASSERT_TRUE(inc);
  EXPECT_EQ(inc->parent_id, "");  // ON DELETE SET NULL
}

TEST(Catalog, VolumeIdsArePermanentAndNeverReused) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  int64_t p1 = 0, p2 = 0;
  {
    Catalog c(db);
    c.upsert_backup(backup("b1"));
    p1 = c.ensure_volume({0, "b1", "part1", "ext4", 1048576, 100});
    p2 = c.ensure_volume({0, "b1", "part2", "unknown", 2097152, 100});
    EXPECT_NE(p1, p2);
    EXPECT_GT(p1, 0);
    // Same (backup, name): same id, updated type.
    EXPECT_EQ(c.ensure_volume({0, "b1", "part2", "ntfs", 2097152, 100}), p2);
    EXPECT_EQ(c.volumes_of("b1")[1].fs_type, "ntfs");
  }
  Catalog c(db);
  EXPECT_EQ(c.ensure_volume({0, "b1", "part1", "ext4", 1048576, 100}), p1);
  ASSERT_TRUE(c.remove_backup("b1"));
  c.upsert_backup(backup("b1"));
  const int64_t again = c.ensure_volume({0, "b1", "part1", "ext4", 1048576, 100});
  EXPECT_GT(again, p2) << "a deleted volume id was handed out again";
  EXPECT_LT(again, int64_t{1} << 23);
  EXPECT_THROW(c.ensure_volume({0, "missing", "part1", "ext4", 0, 1}), Error);
}

TEST(Catalog, ConcurrentEnsureVolumeGivesDistinctIds) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  c.upsert_backup(backup("b1"));
  std::vector<std::thread> threads;
  std::vector<int64_t> ids(8);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] { ids[t] = c.ensure_volume({0, "b1", "part" + std::to_string(t), "ext4", 0, 1}); });
  for (auto& th : threads) th.join();
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), 8u);
  EXPECT_EQ(c.list_volumes().size(), 8u);
}

TEST(Catalog, MountLifecycle) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  c.upsert_backup(backup("b1"));
  const std::string id = c.begin_mount("b1", "/mnt/r", "userspace", 600);
  ASSERT_EQ(id.size(), 36u);
  EXPECT_EQ(id[14], '4');  // UUID v4
  auto rows = c.list_mounts();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, "mounting");
  EXPECT_EQ(rows[0].attach_mode, "userspace");
  EXPECT_EQ(rows[0].mount_mode, "read-only");
  EXPECT_EQ(rows[0].nbd_device, "");
  EXPECT_EQ(rows[0].owner_pid, ::getpid());
  EXPECT_EQ(rows[0].expires_at, rows[0].last_accessed_at + 600);

  c.set_mount_status(id, "mounted", "ext4,ntfs");
  rows = c.list_mounts();
  EXPECT_EQ(rows[0].status, "mounted");
  EXPECT_EQ(rows[0].filesystem_type, "ext4,ntfs");
  EXPECT_THROW(c.set_mount_status(id, "bogus"), Error);

  c.touch_mounts({{id, 1800000000}, {"not-a-mount", 1800000000}}, 300);
  rows = c.list_mounts();
  EXPECT_EQ(rows[0].last_accessed_at, 1800000000);
  EXPECT_EQ(rows[0].expires_at, 1800000300);

  c.set_mount_status(id, "failed", {}, "ext4: bad superblock");
  EXPECT_EQ(c.list_mounts()[0].error, "ext4: bad superblock");
  EXPECT_EQ(c.list_mounts()[0].filesystem_type, "ext4,ntfs");

  c.end_mount(id);
  EXPECT_TRUE(c.list_mounts().empty());
  EXPECT_THROW(c.begin_mount("no-such-backup", "/mnt/r", "userspace", 600), Error);
  EXPECT_THROW(c.begin_mount("b1", "/mnt/r", "magic", 600), Error);
}

TEST(Catalog, ReconcileAllMountsAcrossMountPathsAndPurgesOldFailedRows) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  std::string r1_mounted, r1_other, r1_failed;
  {
    Catalog run1(db);  // crashes with rows on two mount points, one already failed
    run1.upsert_backup(backup("b1"));
    run1.upsert_backup(backup("b2"));
    r1_mounted = run1.begin_mount("b1", "/mnt/r", "userspace", 600);
    run1.set_mount_status(r1_mounted, "mounted", "ext4");
    r1_other = run1.begin_mount("b2", "/mnt/other", "userspace", 600);
    r1_failed = run1.begin_mount("b2", "/mnt/r", "userspace", 600);
    run1.set_mount_status(r1_failed, "failed", {}, "ext4: bad superblock");
  }
  std::string r2_mine, r2_own_failed;
  {
    Catalog run2(db);
    r2_mine = run2.begin_mount("b1", "/mnt/third", "userspace", 600);
    r2_own_failed = run2.begin_mount("b2", "/mnt/third", "userspace", 600);
    run2.set_mount_status(r2_own_failed, "failed", {}, "ntfs: damaged");
    auto reconciled = run2.reconcile_all_mounts();
    ASSERT_EQ(reconciled.size(), 2u);
    std::map<std::string, MountRecord> by_id;
    for (auto& m : reconciled) by_id[m.id] = m;
    ASSERT_TRUE(by_id.contains(r1_mounted) && by_id.contains(r1_other));
    EXPECT_EQ(by_id[r1_mounted].status, "mounted");  // as found
    EXPECT_EQ(by_id[r1_mounted].mount_path, "/mnt/r");
    EXPECT_EQ(by_id[r1_other].status, "mounting");
    EXPECT_EQ(by_id[r1_other].mount_path, "/mnt/other");

    std::map<std::string, MountRecord> rows;
    for (auto& m : run2.list_mounts()) rows[m.id] = m;
    EXPECT_EQ(rows.size(), 4u);
    EXPECT_FALSE(rows.contains(r1_failed));  // failed by an earlier run: purged
    for (const auto& id : {r1_mounted, r1_other}) {
      EXPECT_EQ(rows[id].status, "failed");
      EXPECT_EQ(rows[id].error, "reconciled after unclean shutdown");
    }
    EXPECT_EQ(rows[r2_mine].status, "mounting");     // this run's rows untouched
    EXPECT_EQ(rows[r2_own_failed].error, "ntfs: damaged");
    EXPECT_TRUE(run2.reconcile_all_mounts().empty());  // a second call: nothing new, nothing purged
    EXPECT_EQ(run2.list_mounts().size(), 4u);
  }
  // Run 3: run 1's reconciled rows and run 2's failed row go; run 2's live row
  // is this generation.
  Catalog run3(db);
  auto reconciled = run3.reconcile_all_mounts();
  ASSERT_EQ(reconciled.size(), 1u);
  EXPECT_EQ(reconciled[0].id, r2_mine);
  EXPECT_EQ(reconciled[0].status, "mounting");
  auto rows = run3.list_mounts();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id, r2_mine);
  EXPECT_EQ(rows[0].status, "failed");
  EXPECT_EQ(rows[0].error, "reconciled after unclean shutdown");
}

TEST(Catalog, Iso8601) {
  EXPECT_EQ(to_iso8601(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(to_iso8601(1767268800), "2026-01-01T12:00:00Z");
  EXPECT_EQ(parse_iso8601("2026-01-01T12:00:00Z"), 1767268800);
  EXPECT_EQ(parse_iso8601("2026-01-01 12:00:00"), 1767268800);
  EXPECT_EQ(parse_iso8601("2026-01-01T12:00:00.250Z"), 1767268800);
  EXPECT_EQ(parse_iso8601("2026-01-01T14:00:00+02:00"), 1767268800);
  EXPECT_EQ(parse_iso8601("2026-01-01T12:00"), 1767268800);
  EXPECT_EQ(parse_iso8601("2026-01-01"), 1767225600);
  EXPECT_FALSE(parse_iso8601("2026-02-30T00:00:00Z"));
  EXPECT_FALSE(parse_iso8601("2026-13-01"));
  EXPECT_FALSE(parse_iso8601("yesterday"));
  EXPECT_FALSE(parse_iso8601("2026-01-01T12:00:00Zjunk"));
}

// ---- tenants ---------------------------------------------------------------

// The errno of what `f` throws, or 0 if it does not throw; the message in `what`.
template <typename F>
int error_code_of(F&& f, std::string* what = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (what) *what = e.what();
    return e.code();
  }
  return 0;
}

TEST(Tenants, ValidNames) {
  for (const char* ok : {"a", "Acme", "acme-1", "a.b_c-d", "0day", "A1234567890123456789012345678901234567890123456789012345678901"})
    EXPECT_TRUE(valid_tenant_name(ok)) << ok;
  EXPECT_TRUE(valid_tenant_name(std::string(64, 'x')));
  EXPECT_FALSE(valid_tenant_name(std::string(65, 'x')));
  for (const char* bad : {"", ".", "..", ".hidden", "-opt", "_x", "a/b", "a b", "a]b", "a;b", "a\"b", "a{b", "a=b",
                          "ä", "a\nb", "a$b", "a\\b"})
    EXPECT_FALSE(valid_tenant_name(bad)) << bad;
  EXPECT_FALSE(valid_tenant_name(std::string_view("a\0b", 3)));
}

TEST(Tenants, AddListRemoveAndErrors) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  Catalog c(db);
  const TenantRecord zeta = c.add_tenant("zeta", 1001, 1002);
  EXPECT_GT(zeta.num, 0);
  EXPECT_EQ(zeta.name, "zeta");
  EXPECT_EQ(zeta.uid, 1001u);
  EXPECT_EQ(zeta.gid, 1002u);
  const TenantRecord acme = c.add_tenant("Acme", std::nullopt, std::nullopt);
  EXPECT_NE(acme.num, zeta.num);
  EXPECT_EQ(c.add_tenant("big", 4294967294u, 0).uid, 4294967294u);

  std::string what;
  EXPECT_EQ(error_code_of([&] { c.add_tenant("zeta", 1, 1); }, &what), EEXIST);
  EXPECT_NE(what.find("tenant 'zeta' already exists"), std::string::npos) << what;
  EXPECT_NE(what.find(db), std::string::npos) << what;
  // Share names are case-insensitive: "ACME" would be the same share.
  EXPECT_EQ(error_code_of([&] { c.add_tenant("ACME", 1, 1); }, &what), EEXIST);
  EXPECT_NE(what.find("'Acme'"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { c.add_tenant("../b", 1, 1); }, &what), EINVAL);
  EXPECT_NE(what.find("'../b'"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { c.add_tenant("Restore", 1, 1); }, &what), EINVAL);  // the operator's share name
  EXPECT_NE(what.find("reserved"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { c.add_tenant("nobody", 4294967295u, 1); }), EINVAL);
  EXPECT_EQ(error_code_of([&] { c.add_tenant("nobody", 1, 4294967295u); }), EINVAL);

  auto list = c.list_tenants();
  ASSERT_EQ(list.size(), 3u);  // bytewise by name
  EXPECT_EQ(list[0].name, "Acme");
  EXPECT_EQ(list[0].num, acme.num);
  EXPECT_FALSE(list[0].uid);
  EXPECT_FALSE(list[0].gid);
  EXPECT_EQ(list[1].name, "big");
  EXPECT_EQ(list[2].name, "zeta");
  EXPECT_EQ(list[2].uid, 1001u);
  EXPECT_EQ(list[2].gid, 1002u);

  c.remove_tenant("zeta");
  EXPECT_EQ(error_code_of([&] { c.remove_tenant("zeta"); }, &what), ENOENT);
  EXPECT_NE(what.find("'zeta'"), std::string::npos) << what;
  EXPECT_EQ(c.list_tenants().size(), 2u);
}

TEST(Tenants, NumIsNeverReusedAfterRemove) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  int64_t first = 0, second = 0;
  {
    Catalog c(db);
    first = c.add_tenant("a", std::nullopt, std::nullopt).num;
    second = c.add_tenant("b", std::nullopt, std::nullopt).num;
    c.remove_tenant("b");  // the highest: a plain rowid would hand it out again
  }
  Catalog c(db);
  const TenantRecord again = c.add_tenant("b", std::nullopt, std::nullopt);
  EXPECT_GT(again.num, second);
  EXPECT_EQ(c.list_tenants().front().num, first);
}

TEST(ApiTokens, SecretIsShownOnceAndOnlyItsHashIsKept) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  Catalog c(db);
  const int64_t acme_num = c.add_tenant("acme", 1001, 1001).num;
  const NewApiToken t = c.create_api_token("ACME", 0, "portal");  // names match ignoring case
  EXPECT_EQ(t.secret.rfind("sdr_", 0), 0u) << t.secret;
  EXPECT_EQ(t.secret.size(), 4u + 43u) << t.secret;  // 256 bits in base64url
  EXPECT_EQ(t.record.id.rfind("tok-", 0), 0u);
  EXPECT_EQ(t.record.tenant, "acme");
  EXPECT_EQ(t.record.tenant_num, acme_num);
  const NewApiToken op = c.create_api_token("", 0, "");
  EXPECT_NE(op.secret, t.secret);
  EXPECT_NE(op.record.id, t.record.id);

  const int64_t now = static_cast<int64_t>(::time(nullptr));
  auto who = c.authenticate_api_token(t.secret, now);
  ASSERT_TRUE(who);
  EXPECT_EQ(who->id, t.record.id);
  EXPECT_EQ(who->tenant, "acme");
  EXPECT_EQ(who->label, "portal");
  auto oper = c.authenticate_api_token(op.secret, now);
  ASSERT_TRUE(oper);
  EXPECT_EQ(oper->tenant, "");
  EXPECT_EQ(oper->tenant_num, 0);
  EXPECT_FALSE(c.authenticate_api_token(t.secret + "x", now));
  EXPECT_FALSE(c.authenticate_api_token("", now));

  // The database holds no secret: grep the file and its WAL for it.
  for (const std::string& f : {db, db + "-wal"}) {
    if (!fs::exists(f)) continue;
    EXPECT_EQ(test::read_file(f).find(t.secret.substr(4)), std::string::npos) << f;
  }

  auto list = c.list_api_tokens();
  ASSERT_EQ(list.size(), 2u);
  c.revoke_api_token(t.record.id);
  EXPECT_FALSE(c.authenticate_api_token(t.secret, now)) << "a revoked token still authenticates";
  EXPECT_TRUE(c.authenticate_api_token(op.secret, now));
  c.revoke_api_token(t.record.id);  // twice: no-op
  std::string what;
  EXPECT_EQ(error_code_of([&] { c.revoke_api_token("tok-nope"); }, &what), ENOENT);
  EXPECT_NE(what.find("tok-nope"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { c.create_api_token("nobody", 0, ""); }, &what), ENOENT);

  // Expiry, and a tenant's tokens go with the tenant.
  const NewApiToken brief = c.create_api_token("acme", now + 60, "");
  EXPECT_TRUE(c.authenticate_api_token(brief.secret, now));
  EXPECT_FALSE(c.authenticate_api_token(brief.secret, now + 60));
  c.remove_tenant("acme");
  EXPECT_FALSE(c.authenticate_api_token(brief.secret, now));
  ASSERT_EQ(c.list_api_tokens().size(), 1u);
  EXPECT_EQ(c.list_api_tokens()[0].id, op.record.id);
}

TEST(ApiTokens, AuditLogAndDetachRequests) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  c.add_audit({1800000000, "acme", "tok-1", "download", "b1", "/part1/a", 42, "ok"});
  c.add_audit({1800000001, "", "tok-2", "archive", "b2", "/", 7, "client-closed"});
  auto log = c.list_audit(10);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].action, "archive");  // newest first
  EXPECT_EQ(log[0].result, "client-closed");
  EXPECT_EQ(log[1].tenant, "acme");
  EXPECT_EQ(log[1].bytes, 42u);
  EXPECT_EQ(log[1].at, 1800000000);
  EXPECT_EQ(c.list_audit(1).size(), 1u);

  EXPECT_TRUE(c.take_detach_requests().empty());
  c.request_detach("b1");
  c.request_detach("b2");
  c.request_detach("b1");  // asked twice: once
  auto asked = c.take_detach_requests();
  std::sort(asked.begin(), asked.end());
  EXPECT_EQ(asked, (std::vector<std::string>{"b1", "b2"}));
  EXPECT_TRUE(c.take_detach_requests().empty()) << "requests are taken once";
}

TEST(Tenants, AssignUnassignOneOwnerPerVm) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  c.add_tenant("acme", std::nullopt, std::nullopt);
  c.add_tenant("other", std::nullopt, std::nullopt);
  c.upsert_backup(backup("b1"));  // vm1 has a backup; vm-later has none yet
  c.assign_vm("acme", "vm1");
  c.assign_vm("acme", "vm-later");
  c.assign_vm("acme", "a-first");
  c.assign_vm("acme", "vm1");  // again, same tenant: no-op
  auto list = c.list_tenants();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].vms, (std::vector<std::string>{"a-first", "vm-later", "vm1"}));
  EXPECT_TRUE(list[1].vms.empty());

  std::string what;
  EXPECT_EQ(error_code_of([&] { c.assign_vm("other", "vm1"); }, &what), EBUSY);
  EXPECT_NE(what.find("'vm1'"), std::string::npos) << what;
  EXPECT_NE(what.find("'acme'"), std::string::npos) << what;  // names the current owner
  EXPECT_EQ(error_code_of([&] { c.assign_vm("nobody", "vm1"); }, &what), ENOENT);
  EXPECT_NE(what.find("'nobody'"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { c.assign_vm("acme", "a/b"); }), EINVAL);
  EXPECT_EQ(error_code_of([&] { c.assign_vm("acme", ""); }), EINVAL);

  EXPECT_EQ(error_code_of([&] { c.unassign_vm("other", "vm1"); }, &what), ENOENT);
  EXPECT_NE(what.find("'vm1'"), std::string::npos) << what;
  EXPECT_EQ(error_code_of([&] { c.unassign_vm("nobody", "vm1"); }), ENOENT);
  c.unassign_vm("acme", "vm1");
  EXPECT_EQ(error_code_of([&] { c.unassign_vm("acme", "vm1"); }), ENOENT);
  c.assign_vm("other", "vm1");  // free again
  list = c.list_tenants();
  EXPECT_EQ(list[0].vms, (std::vector<std::string>{"a-first", "vm-later"}));
  EXPECT_EQ(list[1].vms, (std::vector<std::string>{"vm1"}));

  // Removing a tenant drops its assignments: the VMs can be given to another.
  c.remove_tenant("acme");
  c.assign_vm("other", "vm-later");
  EXPECT_EQ(c.list_tenants().front().vms, (std::vector<std::string>{"vm-later", "vm1"}));
  // Backups are not the tenant's to remove.
  EXPECT_TRUE(c.find_backup("b1"));
  // And removing a backup leaves the assignment (the VM's next backup is still the tenant's).
  ASSERT_TRUE(c.remove_backup("b1"));
  EXPECT_EQ(c.list_tenants().front().vms, (std::vector<std::string>{"vm-later", "vm1"}));
}

TEST(Tenants, MigrationOnACatalogOfAnOlderBuild) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  {
    Catalog c(db);
    c.upsert_backup(backup("b1"));
  }
  {
    // Back to the schema before migration 6, as an older build left it.
    RawDb raw(db);
    raw.text("DROP TABLE tenant_vms");
    raw.text("DROP TABLE tenants");
    raw.text("DELETE FROM schema_migrations WHERE version = 6");
    ASSERT_EQ(raw.text("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'tenants'"), "0");
  }
  Catalog c(db);
  EXPECT_EQ(c.schema_version(), Catalog::latest_schema_version());
  EXPECT_TRUE(c.find_backup("b1"));
  EXPECT_TRUE(c.list_tenants().empty());
  c.add_tenant("acme", 5, 6);
  c.assign_vm("acme", "vm1");
  EXPECT_EQ(c.list_tenants().front().vms, (std::vector<std::string>{"vm1"}));
  RawDb raw(db);
  EXPECT_EQ(raw.text("SELECT COUNT(*) FROM schema_migrations WHERE version = 6"), "1");
}

TEST(Tenants, ConcurrentAssignGivesOneOwner) {
  TempDir dir;
  const std::string db = dir / "catalog.db";
  {
    Catalog c(db);
    for (int t = 0; t < 4; ++t) c.add_tenant("t" + std::to_string(t), std::nullopt, std::nullopt);
  }
  // Separate connections (as separate CLI processes): one wins, the rest get EBUSY.
  std::vector<std::thread> threads;
  std::vector<int> codes(4);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Catalog c(db);
      codes[t] = error_code_of([&] { c.assign_vm("t" + std::to_string(t), "contested"); });
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(std::count(codes.begin(), codes.end(), 0), 1);
  EXPECT_EQ(std::count(codes.begin(), codes.end(), EBUSY), 3);
  Catalog c(db);
  size_t owners = 0;
  for (const auto& t : c.list_tenants()) owners += t.vms.size();
  EXPECT_EQ(owners, 1u);
}

// ---- import ----------------------------------------------------------------

std::string qcow2(const std::string& path, const std::string& backing = {}) {
  std::string cmd = "qemu-img create -q -f qcow2 ";
  if (!backing.empty()) cmd += "-b " + shell_quote(backing) + " -F qcow2 ";
  run_ok(cmd + shell_quote(path) + " 16M");
  return path;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

TEST(Import, NamesFoldersParentsAndIdempotence) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo";
  fs::create_directories(repo + "/web01");
  fs::create_directories(repo + "/vmX");
  fs::create_directories(repo + "/chain");
  qcow2(repo + "/web01/backup-web01-20260101120000.qcow2");
  qcow2(repo + "/vmX/disk.qcow2");
  run_ok("touch -d @1700000000 " + shell_quote(repo + "/vmX/disk.qcow2"));
  qcow2(repo + "/chain/full.qcow2");
  run_ok("cd " + shell_quote(repo + "/chain") + " && qemu-img create -q -f qcow2 -b full.qcow2 -F qcow2 inc.qcow2");
  run_ok("truncate -s 1M " + shell_quote(repo + "/vmX/data.img"));
  test::write_file(repo + "/vmX/notes.txt", "not an image");
  test::write_file(repo + "/vmX/junk.qcow2", std::string(4096, 'x'));
  test::write_file(repo + "/vmX/cut.qcow2", std::string("QFI\xfb", 4));  // magic, then nothing
  fs::create_directory_symlink(repo + "/chain", repo + "/vmX/loop");   // not followed

  Catalog c(dir / "catalog.db");
  ImportReport r = import_repository(c, repo);
  EXPECT_EQ(r.added.size(), 5u) << joined(r.added) << joined(r.errors);
  EXPECT_TRUE(r.updated.empty());
  EXPECT_EQ(r.errors.size(), 2u) << joined(r.errors);
  bool junk_named = false, cut_named = false;
  for (const auto& e : r.errors) {
    junk_named |= e.find("junk.qcow2") != std::string::npos;
    cut_named |= e.find("cut.qcow2") != std::string::npos;
  }
  EXPECT_TRUE(junk_named && cut_named) << joined(r.errors);

  auto web = c.find_backup("backup-web01-20260101120000");
  ASSERT_TRUE(web);
  EXPECT_EQ(web->vm, "web01");
  EXPECT_EQ(web->created_at, *parse_iso8601("2026-01-01T12:00:00Z"));
  EXPECT_EQ(web->format, "qcow2");
  EXPECT_EQ(web->kind, "full");
  EXPECT_EQ(web->image_path, fs::canonical(repo + "/web01/backup-web01-20260101120000.qcow2").string());
  EXPECT_GT(web->size, 0u);

  auto disk = c.find_backup("disk");
  ASSERT_TRUE(disk);
  EXPECT_EQ(disk->vm, "vmX");
  EXPECT_EQ(disk->created_at, 1700000000);

  auto data = c.find_backup("data");
  ASSERT_TRUE(data);
  EXPECT_EQ(data->format, "raw");
  EXPECT_FALSE(c.find_backup("notes"));

  auto full = c.find_backup("full");
  auto inc = c.find_backup("inc");
  ASSERT_TRUE(full && inc);
  EXPECT_EQ(full->kind, "full");
  EXPECT_EQ(full->parent_id, "");
  EXPECT_EQ(inc->kind, "incremental");
  EXPECT_EQ(inc->parent_id, "full");
  EXPECT_EQ(inc->vm, "chain");

  // Second run: nothing changes.
  ImportReport again = import_repository(c, repo);
  EXPECT_TRUE(again.added.empty()) << joined(again.added);
  EXPECT_TRUE(again.updated.empty()) << joined(again.updated);
  EXPECT_EQ(again.unchanged.size(), 5u);
  EXPECT_EQ(c.find_backup("inc")->num, inc->num);

  // A vanished image is reported, not removed.
  fs::remove(repo + "/vmX/data.img");
  ImportReport third = import_repository(c, repo);
  EXPECT_TRUE(contains(third.missing, "data"));
  EXPECT_TRUE(c.find_backup("data"));
}

TEST(Import, IncrementalFindsParentAlreadyInCatalog) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string vm = dir / "vm";
  fs::create_directories(vm);
  // A base import skips (not an image by its name), cataloged by hand.
  qcow2(vm + "/base.bin");
  run_ok("cd " + shell_quote(vm) + " && qemu-img create -q -f qcow2 -b base.bin -F qcow2 top.qcow2");
  Catalog c(dir / "catalog.db");
  ImageDescription base = describe_image(vm + "/base.bin", "qcow2");
  base.record.id = "base0";
  c.upsert_backup(base.record);
  ImportReport r = import_repository(c, vm);
  ASSERT_TRUE(contains(r.added, "top")) << joined(r.errors);
  EXPECT_TRUE(r.errors.empty()) << joined(r.errors);
  EXPECT_EQ(c.find_backup("top")->parent_id, "base0");
  EXPECT_EQ(c.find_backup("top")->kind, "incremental");
  EXPECT_FALSE(c.find_backup("base"));
}

// A guest controls its disk's bytes: a raw disk whose first sector holds a
// qcow2 header naming another tenant's image stays raw, never an incremental.
TEST(Import, RawNamedImageWithQcow2HeaderStaysRaw) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo";
  fs::create_directories(repo + "/victim");
  fs::create_directories(repo + "/tenant");
  const std::string victim = qcow2(repo + "/victim/secret.qcow2");
  qcow2(dir / "evil.qcow2", victim);  // outside the repo; its bytes go into the tenant's raw disks
  const std::string evil = test::read_file(dir / "evil.qcow2");
  test::write_file(repo + "/tenant/disk.raw", evil);
  test::write_file(repo + "/tenant/other.IMG", evil);

  Catalog c(dir / "catalog.db");
  ImportReport r = import_repository(c, repo);
  EXPECT_TRUE(r.errors.empty()) << joined(r.errors);
  ASSERT_EQ(r.added.size(), 3u) << joined(r.added);
  for (const std::string id : {"disk", "other"}) {
    auto b = c.find_backup(id);
    ASSERT_TRUE(b) << id;
    EXPECT_EQ(b->format, "raw") << id;
    EXPECT_EQ(b->kind, "full") << id;
    EXPECT_EQ(b->parent_id, "") << id;
  }
  ASSERT_EQ(r.warnings.size(), 2u) << joined(r.warnings);
  for (const std::string name : {"disk.raw", "other.IMG"}) {
    bool warned = false;
    for (const auto& w : r.warnings)
      warned |= w.find(name) != std::string::npos && w.find("served as raw") != std::string::npos;
    EXPECT_TRUE(warned) << name << "\n" << joined(r.warnings);
  }
  EXPECT_EQ(c.find_backup("secret")->format, "qcow2");

  // The same rule from describe_image with no format.
  ImageDescription d = describe_image(repo + "/tenant/disk.raw");
  EXPECT_EQ(d.record.format, "raw");
  EXPECT_EQ(d.backing_name, "");
  EXPECT_EQ(d.warnings.size(), 1u);
}

TEST(Import, FormatFromNameOnly) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  qcow2(dir / "a.QCOW");
  qcow2(dir / "a.bin");
  test::write_file(dir / "plain.raw", std::string(4096, '\0'));
  test::write_file(dir / "fake.qcow2", std::string(4096, '\0'));
  EXPECT_EQ(choose_format(dir / "a.QCOW").format, "qcow2");
  EXPECT_EQ(choose_format(dir / "a.bin").format, "");  // magic or not, the name tells nothing
  EXPECT_EQ(choose_format(dir / "plain.raw").format, "raw");
  EXPECT_EQ(choose_format(dir / "plain.raw").warning, "");
  try {
    choose_format(dir / "fake.qcow2");
    FAIL() << "a .qcow2 without the magic was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EINVAL);
    EXPECT_NE(std::string(e.what()).find(dir / "fake.qcow2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(describe_image(dir / "a.bin"), Error);
  EXPECT_EQ(describe_image(dir / "a.bin", "qcow2").record.format, "qcow2");

  Catalog c(dir / "catalog.db");
  ImportReport r = import_repository(c, dir.path());
  EXPECT_TRUE(contains(r.added, "a")) << joined(r.added);
  EXPECT_TRUE(contains(r.added, "plain"));
  EXPECT_EQ(r.added.size(), 2u) << joined(r.added);  // a.bin skipped
  ASSERT_EQ(r.errors.size(), 1u) << joined(r.errors);
  EXPECT_NE(r.errors[0].find("fake.qcow2"), std::string::npos) << r.errors[0];
  EXPECT_NE(r.errors[0].find("no qcow2 magic"), std::string::npos) << r.errors[0];
}

// A qcow2 the daemon would refuse to open (confined to its own folder) is an
// import error with the reason, not a backup.
TEST(Import, RefusedBackingChainsAreErrors) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo", vm = repo + "/vm";
  fs::create_directories(vm);
  qcow2(repo + "/outside.qcow2");
  qcow2(vm + "/gone-base.qcow2");
  run_ok("truncate -s 16M " + shell_quote(vm + "/base.raw"));
  const std::string in_vm = "cd " + shell_quote(vm) + " && qemu-img create -q -f qcow2 -u ";
  run_ok(in_vm + "-b gone-base.qcow2 -F qcow2 missing.qcow2 16M");
  fs::remove(vm + "/gone-base.qcow2");
  run_ok(in_vm + "-b ../outside.qcow2 -F qcow2 escape.qcow2 16M");
  run_ok(in_vm + "-b " +
         shell_quote(R"(json:{"driver":"qcow2","file":{"driver":"file","filename":"/etc/shadow"}})") +
         " -F qcow2 json.qcow2 16M");
  run_ok(in_vm + "-b base.raw -F raw rawback.qcow2 16M");

  Catalog c(dir / "catalog.db");
  ImportReport r = import_repository(c, repo);
  // outside.qcow2 and base.raw are fine fulls; a qcow2 over a raw base
  // declared as such is an incremental (read through qemu-nbd).
  EXPECT_TRUE(contains(r.added, "outside")) << joined(r.added);
  EXPECT_TRUE(contains(r.added, "base")) << joined(r.added);
  EXPECT_TRUE(contains(r.added, "rawback")) << joined(r.added);
  EXPECT_EQ(r.added.size(), 3u) << joined(r.added);
  ASSERT_TRUE(c.find_backup("rawback"));
  EXPECT_EQ(c.find_backup("rawback")->parent_id, "base");
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"missing.qcow2", "does not exist"},
      {"escape.qcow2", "outside the repository folder"},
      {"json.qcow2", "protocol or json: name"},
  };
  EXPECT_EQ(r.errors.size(), expected.size()) << joined(r.errors);
  for (const auto& [name, reason] : expected) {
    bool found = false;
    for (const auto& e : r.errors) found |= e.find(name) != std::string::npos && e.find(reason) != std::string::npos;
    EXPECT_TRUE(found) << name << " / " << reason << "\n" << joined(r.errors);
    EXPECT_FALSE(c.find_backup(fs::path(name).stem().string())) << name;
  }
}

TEST(Import, MissingFolderThrows) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  EXPECT_THROW(import_repository(c, dir / "nope"), Error);
}

// ---- the CLI ---------------------------------------------------------------

struct Cli {
  int status;
  std::string out;   // stdout
  std::string err;   // stderr
};

Cli cli(const TempDir& dir, const std::string& args) {
  const std::string out = dir / ".cli-out", err = dir / ".cli-err";
  auto r = run(std::string(SENDENSE_CLI) + " " + args + " >" + shell_quote(out) + " 2>" + shell_quote(err));
  return {r.status, test::read_file(out), test::read_file(err)};
}

size_t lines(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

TEST(Cli, ImportListRemoveStatus) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo", db = dir / "c.db";
  fs::create_directories(repo);
  qcow2(repo + "/backup-web01-20260101120000.qcow2");
  run_ok("cd " + shell_quote(repo) +
         " && qemu-img create -q -f qcow2 -b backup-web01-20260101120000.qcow2 -F qcow2"
         " backup-web01-20260102120000.qcow2");
  const std::string cat = " --catalog " + shell_quote(db);

  Cli r = cli(dir, "catalog import " + shell_quote(repo) + cat);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("2 added"), std::string::npos) << r.out;

  r = cli(dir, "catalog list --json" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["id"], "backup-web01-20260101120000");
  EXPECT_EQ(j[0]["vm"], "web01");
  EXPECT_EQ(j[0]["time"], "2026-01-01T12:00:00Z");
  EXPECT_EQ(j[0]["kind"], "full");
  EXPECT_TRUE(j[0]["parent"].is_null());
  EXPECT_EQ(j[1]["parent"], "backup-web01-20260101120000");
  EXPECT_EQ(j[1]["kind"], "incremental");

  r = cli(dir, "catalog list" + cat);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(lines(r.out), 3u) << r.out;

  r = cli(dir, "status --json" + cat);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 0u);
  {
    Catalog c(db);
    const std::string id = c.begin_mount("backup-web01-20260101120000", "/mnt/r", "userspace", 600);
    c.ensure_volume({0, "backup-web01-20260101120000", "part1", "ext4", 1048576, 1 << 20});
    c.set_mount_status(id, "mounted", "ext4");
  }
  r = cli(dir, "status --json" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["status"], "mounted");
  EXPECT_EQ(j[0]["device"], "userspace");
  EXPECT_EQ(j[0]["volumes"][0]["fs_type"], "ext4");
  r = cli(dir, "status" + cat);
  EXPECT_NE(r.out.find("part1:ext4"), std::string::npos) << r.out;

  r = cli(dir, "catalog remove backup-web01-20260101120000" + cat);
  EXPECT_EQ(r.status, 0) << r.err;
  r = cli(dir, "catalog remove backup-web01-20260101120000" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("backup-web01-20260101120000"), std::string::npos) << r.err;
}

TEST(Cli, AddDerivesFormatAndParent) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string db = dir / "c.db";
  qcow2(dir / "base.qcow2");
  qcow2(dir / "top.qcow2", dir / "base.qcow2");
  const std::string cat = " --catalog " + shell_quote(db);
  Cli r = cli(dir, "catalog add --id b0 --vm db1 --time 2026-03-01T10:00:00Z --path " +
                       shell_quote(dir / "base.qcow2") + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli(dir, "catalog add --id b1 --path " + shell_quote(dir / "top.qcow2") + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  Catalog c(db);
  EXPECT_EQ(c.find_backup("b0")->vm, "db1");
  EXPECT_EQ(c.find_backup("b0")->created_at, *parse_iso8601("2026-03-01T10:00:00Z"));
  EXPECT_EQ(c.find_backup("b1")->format, "qcow2");
  EXPECT_EQ(c.find_backup("b1")->parent_id, "b0");
  EXPECT_EQ(c.find_backup("b1")->kind, "incremental");

  r = cli(dir, "catalog add --id b2 --time notatime --path " + shell_quote(dir / "top.qcow2") + cat);
  EXPECT_EQ(r.status, 2) << r.err;
  r = cli(dir, "catalog add --id b3 --path " + shell_quote(dir / "missing.qcow2") + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("missing.qcow2"), std::string::npos) << r.err;
}

TEST(Cli, AddFormatComesFromTheNameOrFormat) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string db = dir / "c.db";
  const std::string cat = " --catalog " + shell_quote(db);
  qcow2(dir / "disk.bin");
  Cli r = cli(dir, "catalog add --id b0 --path " + shell_quote(dir / "disk.bin") + cat);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("--format"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("disk.bin"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(db));  // refused before the catalog is opened

  r = cli(dir, "catalog add --id b0 --format qcow2 --path " + shell_quote(dir / "disk.bin") + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli(dir, "catalog add --id b1 --format raw --path " + shell_quote(dir / "disk.bin") + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("served as raw"), std::string::npos) << r.err;  // explicit raw, with the magic

  // A .raw holding a qcow2 header that names a backing file: raw, warned.
  qcow2(dir / "top.qcow2", dir / "disk.bin");
  test::write_file(dir / "guest.raw", test::read_file(dir / "top.qcow2"));
  r = cli(dir, "catalog add --id b2 --path " + shell_quote(dir / "guest.raw") + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("served as raw"), std::string::npos) << r.err;

  // A qcow2 whose backing file escapes its folder: refused with the reason.
  fs::create_directories(dir / "vm");
  run_ok("cd " + shell_quote(dir / "vm") + " && qemu-img create -q -f qcow2 -u -b ../disk.bin -F qcow2 inc.qcow2 16M");
  r = cli(dir, "catalog add --id b3 --path " + shell_quote(dir / "vm/inc.qcow2") + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("outside the repository folder"), std::string::npos) << r.err;

  Catalog c(db);
  EXPECT_EQ(c.find_backup("b0")->format, "qcow2");
  EXPECT_EQ(c.find_backup("b1")->format, "raw");
  EXPECT_EQ(c.find_backup("b2")->format, "raw");
  EXPECT_EQ(c.find_backup("b2")->kind, "full");
  EXPECT_EQ(c.find_backup("b2")->parent_id, "");
  EXPECT_FALSE(c.find_backup("b3"));
}

TEST(Cli, UsageErrorsAndHelp) {
  TempDir dir;
  EXPECT_EQ(cli(dir, "").status, 2);
  EXPECT_EQ(cli(dir, "frobnicate").status, 2);
  EXPECT_EQ(cli(dir, "catalog list --bogus").status, 2);
  EXPECT_EQ(cli(dir, "catalog import").status, 2);
  Cli h = cli(dir, "--help");
  EXPECT_EQ(h.status, 0);
  EXPECT_NE(h.out.find("catalog import"), std::string::npos);
  Cli missing = cli(dir, "catalog list --catalog " + shell_quote(dir / "none.db"));
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("none.db"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "none.db"));
}

TEST(Cli, InspectImageAndBrokenImage) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  qcow2(dir / "base.qcow2");
  qcow2(dir / "top.qcow2", dir / "base.qcow2");
  Cli r = cli(dir, "inspect --json " + shell_quote(dir / "top.qcow2"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "qcow2");
  EXPECT_EQ(j["size"], 16u << 20);
  ASSERT_EQ(j["chain"].size(), 2u);
  EXPECT_EQ(j["chain"][0]["backing_name"], dir / "base.qcow2");
  EXPECT_EQ(j["chain"][0]["virtual_size"], 16u << 20);
  EXPECT_EQ(j["partition_table"]["scheme"], "none");

  r = cli(dir, "inspect " + shell_quote(dir / "top.qcow2"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("chain"), std::string::npos) << r.out;

  std::string bad = std::string("QFI\xfb", 4) + std::string(200, '\xff');
  test::write_file(dir / "bad.qcow2", bad);
  r = cli(dir, "inspect " + shell_quote(dir / "bad.qcow2"));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find(dir / "bad.qcow2"), std::string::npos) << r.err;
}

TEST(Cli, InspectPartitionsAndVolumes) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  SENDENSE_REQUIRE_TOOL("sfdisk");
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  TempDir dir;
  const std::string raw = dir / "disk.raw";
  run_ok("truncate -s 64M " + shell_quote(raw));
  run_ok("printf 'label: gpt\\n,20M,L\\n,,L\\n' | sfdisk -q " + shell_quote(raw));
  run_ok("mkfs.ext4 -q -F -E offset=1048576 " + shell_quote(raw) + " 20M");
  run_ok("qemu-img convert -O qcow2 " + shell_quote(raw) + " " + shell_quote(dir / "disk.qcow2"));

  Cli r = cli(dir, "inspect --json " + shell_quote(dir / "disk.qcow2"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["partition_table"]["scheme"], "gpt");
  ASSERT_EQ(j["partition_table"]["partitions"].size(), 2u);
  EXPECT_EQ(j["partition_table"]["partitions"][0]["offset"], 1048576u);
  EXPECT_EQ(j["partition_table"]["partitions"][0]["length"], 20u << 20);
  ASSERT_EQ(j["volumes"].size(), 2u);
  EXPECT_EQ(j["volumes"][0]["name"], "part1");
  EXPECT_EQ(j["volumes"][0]["fs_type"], "ext4");
  EXPECT_EQ(j["volumes"][0]["has_reader"], true);
  EXPECT_EQ(j["volumes"][1]["fs_type"], "unknown");
  EXPECT_EQ(j["volumes"][1]["has_reader"], false);

  r = cli(dir, "inspect --format raw " + shell_quote(raw));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("partition table: gpt"), std::string::npos) << r.out;

  // The format comes from the name, as in the catalog: a .raw holding a
  // qcow2 header is inspected as raw (with a warning); an unknown name needs --format.
  run_ok("cp " + shell_quote(dir / "disk.qcow2") + " " + shell_quote(dir / "looks-qcow2.raw"));
  r = cli(dir, "inspect --json " + shell_quote(dir / "looks-qcow2.raw"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["format"], "raw");
  EXPECT_NE(r.err.find("warning"), std::string::npos) << r.err;
  run_ok("cp " + shell_quote(raw) + " " + shell_quote(dir / "disk.bin"));
  r = cli(dir, "inspect " + shell_quote(dir / "disk.bin"));
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("--format"), std::string::npos) << r.err;
}


// ---- the CLI: tenants and export stanzas -------------------------------------

TEST(Cli, TenantAddAssignListUnassignRemove) {
  TempDir dir;
  const std::string db = dir / "c.db";
  const std::string cat = " --catalog " + shell_quote(db);
  // Commands that change existing rows do not create a catalog at a mistyped path.
  Cli r = cli(dir, "tenant assign acme --vm web01" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("c.db"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(db));

  r = cli(dir, "tenant add acme --uid 1001 --gid 1002" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("added tenant acme"), std::string::npos) << r.out;
  r = cli(dir, "tenant add beta" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli(dir, "tenant add ACME" + cat);  // unique ignoring case
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("'acme' already exists"), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.err), 1u) << r.err;
  EXPECT_EQ(cli(dir, "tenant add ../x" + cat).status, 2);
  EXPECT_EQ(cli(dir, "tenant add x --uid -1" + cat).status, 2);
  EXPECT_EQ(cli(dir, "tenant add x --uid 4294967295" + cat).status, 2);
  EXPECT_EQ(cli(dir, "tenant add x --uid 12ab" + cat).status, 2);
  EXPECT_EQ(cli(dir, "tenant assign acme" + cat).status, 2);  // no --vm

  r = cli(dir, "tenant assign acme --vm web01 --vm ../x" + cat);  // a bad name: nothing assigned
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("invalid vm name '../x'"), std::string::npos) << r.err;
  EXPECT_TRUE(Catalog(db).list_tenants().front().vms.empty());
  r = cli(dir, "tenant assign acme --vm web01 --vm db01" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("assigned web01 to acme"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("'web01' has no backups in the catalog yet"), std::string::npos) << r.err;
  r = cli(dir, "tenant assign acme --vm web01" + cat);  // again: no-op
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("already  web01"), std::string::npos) << r.out;
  // Another owner's VM refuses the whole list.
  r = cli(dir, "tenant assign beta --vm mail01 --vm web01" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("'web01' is owned by tenant 'acme'"), std::string::npos) << r.err;
  r = cli(dir, "tenant list --json" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["name"], "acme");
  EXPECT_EQ(j[0]["uid"], 1001);
  EXPECT_EQ(j[0]["gid"], 1002);
  EXPECT_EQ(j[0]["vms"], nlohmann::json({"db01", "web01"}));
  EXPECT_GT(j[0]["num"].get<int64_t>(), 0);
  EXPECT_EQ(j[1]["name"], "beta");
  EXPECT_TRUE(j[1]["uid"].is_null());
  EXPECT_TRUE(j[1]["vms"].empty()) << j[1];  // mail01 was not assigned either

  r = cli(dir, "tenant list" + cat);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(lines(r.out), 3u) << r.out;
  EXPECT_NE(r.out.find("db01,web01"), std::string::npos) << r.out;

  r = cli(dir, "tenant unassign beta --vm web01" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not assigned to tenant 'beta'"), std::string::npos) << r.err;
  r = cli(dir, "tenant unassign acme --vm web01" + cat);
  EXPECT_EQ(r.status, 0) << r.err;
  r = cli(dir, "tenant remove acme" + cat);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("1 vm assignments dropped"), std::string::npos) << r.out;
  r = cli(dir, "tenant remove acme" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no tenant 'acme'"), std::string::npos) << r.err;
  EXPECT_EQ(cli(dir, "tenant" + cat).status, 2);
  EXPECT_EQ(cli(dir, "tenant frob" + cat).status, 2);
}

TEST(Cli, ImportWithTenantAssignsItsVms) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo", db = dir / "c.db";
  fs::create_directories(repo);
  qcow2(repo + "/backup-web01-20260101120000.qcow2");
  qcow2(repo + "/backup-db01-20260101120000.qcow2");
  const std::string cat = " --catalog " + shell_quote(db);

  // The tenant must exist: nothing is imported otherwise.
  Cli r = cli(dir, "tenant add other" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli(dir, "catalog import " + shell_quote(repo) + " --tenant acme" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no tenant 'acme'"), std::string::npos) << r.err;
  EXPECT_TRUE(Catalog(db).list_backups().empty());

  r = cli(dir, "tenant add acme --uid 1 --gid 1" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli(dir, "catalog import " + shell_quote(repo) + " --tenant acme" + cat);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("2 added"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("assigned   db01 to acme"), std::string::npos) << r.out;
  {
    Catalog c(db);
    EXPECT_EQ(c.list_tenants().front().vms, (std::vector<std::string>{"db01", "web01"}));
  }
  // Idempotent: the unchanged backups' VMs are still acme's, nothing new assigned.
  r = cli(dir, "catalog import " + shell_quote(repo) + " --tenant acme" + cat);
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find("assigned"), std::string::npos) << r.out;

  // A VM another tenant owns: the backups are imported, no VM is assigned, exit 1.
  qcow2(repo + "/backup-mail01-20260101120000.qcow2");
  r = cli(dir, "catalog import " + shell_quote(repo) + " --tenant other" + cat);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.err.find("is owned by tenant 'acme'"), std::string::npos) << r.err;
  Catalog c(db);
  EXPECT_TRUE(c.find_backup("backup-mail01-20260101120000"));
  EXPECT_TRUE(c.list_tenants()[1].vms.empty());
}

// A uid/gid this host has no passwd/group entry for (Samba's force user needs one).
constexpr uint32_t kUnknownId = 3999999999u;

TEST(Cli, TokenCreateListRevoke) {
  TempDir dir;
  const std::string db = dir / "c.db";
  const std::string cat = " --catalog " + shell_quote(db);
  ASSERT_EQ(cli(dir, "tenant add acme" + cat).status, 0);
  EXPECT_EQ(cli(dir, "token create" + cat).status, 2);                          // neither
  EXPECT_EQ(cli(dir, "token create --tenant acme --operator" + cat).status, 2);  // both
  EXPECT_EQ(cli(dir, "token create --tenant acme --expires 3w" + cat).status, 2);
  EXPECT_EQ(cli(dir, "token create --tenant acme --expires 2001-01-01" + cat).status, 2);
  Cli r = cli(dir, "token create --tenant nobody" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("'nobody'"), std::string::npos) << r.err;

  r = cli(dir, "token create --tenant acme --expires 30d --label portal" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string secret = r.out.substr(0, r.out.find('\n'));
  EXPECT_EQ(r.out, secret + "\n") << "the secret is alone on stdout";
  EXPECT_EQ(secret.rfind("sdr_", 0), 0u) << secret;
  EXPECT_NE(r.err.find("shown only this once"), std::string::npos) << r.err;
  ASSERT_EQ(cli(dir, "token create --operator" + cat).status, 0);

  r = cli(dir, "token list --json" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  std::string acme_id;
  for (const auto& t : j) {
    EXPECT_EQ(t["state"], "valid");
    if (t["operator"] == false) {
      acme_id = t["id"];
      EXPECT_EQ(t["tenant"], "acme");
      EXPECT_EQ(t["label"], "portal");
      EXPECT_FALSE(t["expires_at"].is_null());
    }
  }
  EXPECT_EQ(r.out.find(secret.substr(4)), std::string::npos) << "list shows a secret";
  ASSERT_FALSE(acme_id.empty());
  r = cli(dir, "token revoke " + acme_id + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli(dir, "token list" + cat);
  EXPECT_NE(r.out.find("revoked"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(operator)"), std::string::npos) << r.out;
  EXPECT_EQ(cli(dir, "token revoke tok-0000" + cat).status, 1);
}

TEST(Cli, ExportStanzas) {
  TempDir dir;
  const std::string db = dir / "c.db";
  const std::string cat = " --catalog " + shell_quote(db);
  const passwd* pw = ::getpwuid(::getuid());
  const group* gr = ::getgrgid(::getgid());
  ASSERT_TRUE(pw && gr);
  const std::string user = pw->pw_name, grp = gr->gr_name;
  ASSERT_EQ(cli(dir, "tenant add first --uid 1 --gid 1" + cat).status, 0);
  ASSERT_EQ(cli(dir, "tenant remove first" + cat).status, 0);  // its num is not reused
  ASSERT_EQ(cli(dir, "tenant add acme --uid " + std::to_string(::getuid()) + " --gid " + std::to_string(::getgid()) + cat)
                .status,
            0);
  const int64_t num = Catalog(db).list_tenants().front().num;
  ASSERT_EQ(num, 2);

  Cli r = cli(dir, "export samba --tenant acme --mountpoint /srv/restore/" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\n[sendense-acme]\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  path = /srv/restore/tenants/acme\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  read only = yes\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  wide links = no\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  force user = " + user + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  force group = " + grp + "\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  vfs objects =\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\n  wide links = yes"), std::string::npos) << r.out;  // (comments may name it)

  r = cli(dir, "export ganesha --tenant ACME --mountpoint /srv/restore" + cat);  // names match ignoring case
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\n  Export_Id = 1002;\n"), std::string::npos) << r.out;  // 1000 + num, stable
  EXPECT_NE(r.out.find("\n  Path = \"/srv/restore/tenants/acme\";\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  Pseudo = \"/sendense/acme\";\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  Access_Type = RO;\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  Anonymous_Uid = " + std::to_string(::getuid()) + ";\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  Filesystem_Id = 1936027236.1002;\n"), std::string::npos) << r.out;
  EXPECT_EQ(cli(dir, "export ganesha --tenant acme --mountpoint /srv/restore" + cat).out, r.out);  // same every run

  // The operator's tree: fixed id, this host only, no forced user.
  r = cli(dir, "export ganesha --mountpoint /srv/restore" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\n  Export_Id = 1000;\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n  Path = \"/srv/restore\";\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Clients = 127.0.0.1;"), std::string::npos) << r.out;
  r = cli(dir, "export samba --mountpoint /srv/restore" + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\n[sendense-restore]\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("force user"), std::string::npos) << r.out;
  r = cli(dir, "export samba --global");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\n  allow insecure wide links = no\n"), std::string::npos) << r.out;
  EXPECT_EQ(cli(dir, "export samba --global --tenant acme").status, 2);

  // The mount point from the daemon's configuration file.
  test::write_file(dir / "restorefs.conf", "# test\nmountpoint = /from/conf\n");
  r = cli(dir, "export ganesha --config " + shell_quote(dir / "restorefs.conf") + cat);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\n  Path = \"/from/conf\";\n"), std::string::npos) << r.out;
  test::write_file(dir / "bad.conf", "mountpoint = /x\nbogus = 1\n");
  r = cli(dir, "export ganesha --config " + shell_quote(dir / "bad.conf") + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("bad.conf:2"), std::string::npos) << r.err;

  // Refusals name what is wrong.
  r = cli(dir, "export samba --tenant nobody --mountpoint /srv/restore" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no tenant 'nobody'"), std::string::npos) << r.err;
  ASSERT_EQ(cli(dir, "tenant add rootish" + cat).status, 0);
  r = cli(dir, "export ganesha --tenant rootish --mountpoint /srv/restore" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("tenant rootish has no uid"), std::string::npos) << r.err;
  ASSERT_EQ(cli(dir, "tenant add ghost --uid " + std::to_string(kUnknownId) + " --gid 0" + cat).status, 0);
  r = cli(dir, "export samba --tenant ghost --mountpoint /srv/restore" + cat);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("uid " + std::to_string(kUnknownId) + " of tenant ghost has no passwd entry"), std::string::npos)
      << r.err;
  for (const char* bad : {"relative/dir", "/with%u", "/a\\\"b", "/a/../etc"}) {
    r = cli(dir, "export samba --mountpoint " + shell_quote(bad) + cat);
    EXPECT_EQ(r.status, 1) << bad;
    EXPECT_NE(r.err.find("mount point"), std::string::npos) << r.err;
  }
  EXPECT_EQ(cli(dir, "export").status, 2);
  EXPECT_EQ(cli(dir, "export nfsd").status, 2);
}

}  // namespace
}  // namespace sendense
