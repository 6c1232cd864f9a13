#include "catalog/catalog.h"

#include <strings.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <random>

#include "catalog/sqlite_handle.h"
#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace {

using sqlite::Statement;
using sqlite::time_column;
using sqlite::Transaction;

// Numbered migrations, applied in order, each once, in one transaction at
// open. Never edit a released migration: add the next number.
struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE backup_jobs (
  num              INTEGER PRIMARY KEY AUTOINCREMENT,
  id               TEXT NOT NULL UNIQUE,
  vm_name          TEXT NOT NULL,
  image_path       TEXT NOT NULL,
  format           TEXT NOT NULL CHECK (format IN ('qcow2', 'raw')),
  parent_backup_id TEXT REFERENCES backup_jobs(id) ON DELETE SET NULL
                   CHECK (parent_backup_id IS NULL OR parent_backup_id <> id),
  kind             TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
  created_at       TEXT NOT NULL,
  size_bytes       INTEGER NOT NULL DEFAULT 0,
  status           TEXT NOT NULL DEFAULT 'completed'
);
CREATE INDEX idx_backup_jobs_vm ON backup_jobs(vm_name, created_at);
CREATE INDEX idx_backup_jobs_parent ON backup_jobs(parent_backup_id);
CREATE INDEX idx_backup_jobs_image ON backup_jobs(image_path);

CREATE TABLE restore_mounts (
  id               TEXT PRIMARY KEY,
  backup_id        TEXT NOT NULL REFERENCES backup_jobs(id) ON DELETE CASCADE,
  mount_path       TEXT NOT NULL,
  nbd_device       TEXT,
  filesystem_type  TEXT,
  mount_mode       TEXT NOT NULL DEFAULT 'read-only' CHECK (mount_mode = 'read-only'),
  status           TEXT NOT NULL CHECK (status IN ('mounting', 'mounted', 'unmounting', 'failed')),
  created_at       TEXT NOT NULL,
  last_accessed_at TEXT NOT NULL,
  expires_at       TEXT,
  attach_mode      TEXT NOT NULL DEFAULT 'userspace' CHECK (attach_mode IN ('userspace', 'kernel')),
  owner_pid        INTEGER NOT NULL DEFAULT 0,
  error            TEXT
);
CREATE INDEX idx_restore_mounts_backup ON restore_mounts(backup_id);
CREATE INDEX idx_restore_mounts_status ON restore_mounts(status);

-- The node-id namespace: ids are never reused (AUTOINCREMENT) and must fit
-- the 23 bits fuse/node_id.h gives them.
CREATE TABLE volumes (
  id           INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 8388607),
  backup_id    TEXT NOT NULL REFERENCES backup_jobs(id) ON DELETE CASCADE,
  name         TEXT NOT NULL,
  fs_type      TEXT NOT NULL DEFAULT 'unknown',
  offset_bytes INTEGER NOT NULL DEFAULT 0,
  length_bytes INTEGER NOT NULL DEFAULT 0,
  UNIQUE (backup_id, name)
);
)sql"},
    // The journal report of each volume's last attach, for `status`.
    {2, R"sql(
ALTER TABLE volumes ADD COLUMN journal_state TEXT NOT NULL DEFAULT '';
ALTER TABLE volumes ADD COLUMN journal_transactions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN journal_blocks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN journal_note TEXT NOT NULL DEFAULT '';
)sql"},
    // Multi-disk backups: one row per disk image, disk 0 mirroring
    // backup_jobs.image_path/format (which older readers keep using).
    {3, R"sql(
CREATE TABLE backup_disks (
  backup_id   TEXT NOT NULL REFERENCES backup_jobs(id) ON DELETE CASCADE ON UPDATE CASCADE,
  disk        INTEGER NOT NULL CHECK (disk >= 0),
  image_path  TEXT NOT NULL,
  format      TEXT NOT NULL,
  PRIMARY KEY (backup_id, disk)
);
INSERT INTO backup_disks (backup_id, disk, image_path, format) SELECT id, 0, image_path, format FROM backup_jobs;
)sql"},
    // 4: images read by qemu (VMDK, VHDX), and which reader serves each
    // attach. SQLite cannot alter a CHECK constraint; the documented way
    // (sqlite.org/lang_altertable.html, "other kinds of table schema
    // changes") is to edit the table's stored SQL, which only widens the
    // accepted values here. Editing the text, rather than rebuilding the
    // table, keeps whatever columns other migrations add to backup_jobs.
    // The ALTER TABLE that follows reloads the schema of this connection.
    {4, R"sql(
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'CHECK (format IN (''qcow2'', ''raw''))',
                          'CHECK (format IN (''qcow2'', ''raw'', ''vmdk'', ''vhdx''))')
 WHERE type = 'table' AND name = 'backup_jobs';
PRAGMA writable_schema = OFF;
ALTER TABLE restore_mounts ADD COLUMN image_reader TEXT;
)sql"},
    // 5: the kernel attach backend: which backend serves each volume
    // ("userspace" or "kernel"; "" before its first attach), and the kernel
    // devices held (UNIQUE: two daemons or a crash never hand one device out
    // twice; rows of a dead run are released at the next start).
    {5, R"sql(
ALTER TABLE volumes ADD COLUMN backend TEXT NOT NULL DEFAULT '';
CREATE TABLE kernel_devices (
  device      TEXT NOT NULL UNIQUE,
  kind        TEXT NOT NULL CHECK (kind IN ('loop', 'nbd')),
  backup_id   TEXT NOT NULL,
  mount_id    TEXT NOT NULL,
  owner_pid   INTEGER NOT NULL,
  helper_pid  INTEGER NOT NULL DEFAULT 0,
  created_at  TEXT NOT NULL
);
)sql"},
    // 6: tenants (customers) and the VMs each owns. num is the permanent key
    // node ids and export ids derive from (AUTOINCREMENT: never reused after
    // a remove). Names are unique ignoring case: Samba share names are.
    // vm_name is the primary key of tenant_vms, so a VM has one owner at
    // most; it is not a foreign key, a VM may be assigned before its first
    // backup is imported. uid/gid NULL = unset (root inside the view).
    {6, R"sql(
CREATE TABLE tenants (
  num         INTEGER PRIMARY KEY AUTOINCREMENT,
  name        TEXT NOT NULL UNIQUE COLLATE NOCASE,
  uid         INTEGER CHECK (uid IS NULL OR uid BETWEEN 0 AND 4294967294),
  gid         INTEGER CHECK (gid IS NULL OR gid BETWEEN 0 AND 4294967294),
  created_at  TEXT NOT NULL
);
CREATE TABLE tenant_vms (
  vm_name     TEXT PRIMARY KEY,
  tenant_num  INTEGER NOT NULL REFERENCES tenants(num) ON DELETE CASCADE
);
CREATE INDEX idx_tenant_vms_tenant ON tenant_vms(tenant_num, vm_name);
)sql"},
    // 7: the HTTP service (sendense-restore-web). API tokens: only a
    // SHA-256 of the secret is kept; a tenant's tokens go with the tenant;
    // tenant_num NULL is an operator token. The audit log of downloads and
    // archives keeps names as text, so it outlives tokens and tenants.
    // detach_requests: `sendense-restore detach` and the web service ask the
    // daemon (which polls it) to detach a backup.
    {7, R"sql(
CREATE TABLE api_tokens (
  id          TEXT PRIMARY KEY,
  tenant_num  INTEGER REFERENCES tenants(num) ON DELETE CASCADE,
  hash        TEXT NOT NULL UNIQUE,
  label       TEXT NOT NULL DEFAULT '',
  created_at  TEXT NOT NULL,
  expires_at  TEXT,
  revoked_at  TEXT
);
CREATE TABLE audit_log (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  at          TEXT NOT NULL,
  tenant      TEXT NOT NULL,
  token_id    TEXT NOT NULL,
  action      TEXT NOT NULL,
  backup_id   TEXT NOT NULL,
  path        TEXT NOT NULL,
  bytes       INTEGER NOT NULL,
  result      TEXT NOT NULL
);
CREATE TABLE detach_requests (
  backup_id    TEXT PRIMARY KEY,
  requested_at TEXT NOT NULL
);
)sql"},
};

constexpr int64_t kMaxVolumeId = (1LL << 23) - 1;

int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }

std::string new_uuid_v4() {
  std::random_device rd;  // /dev/urandom (getrandom) on Linux
  std::array<unsigned char, 16> b{};
  for (size_t i = 0; i < b.size(); i += 4) {
    const uint32_t r = rd();
    for (size_t j = 0; j < 4; ++j) b[i + j] = static_cast<unsigned char>(r >> (8 * j));
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += hex[b[i] >> 4];
    s += hex[b[i] & 0x0f];
  }
  return s;
}

// Backup ids and vm names become directory names under the FUSE root and
// by-vm/: refuse what cannot be one (or would shadow by-vm/ itself).
void check_name(const std::string& value, const char* what, const std::string& db_path) {
  if (value.empty() || value == "." || value == ".." || value.find('/') != std::string::npos ||
      value.find('\0') != std::string::npos)
    throw Error(EINVAL, std::string("invalid ") + what + " '" + value + "' (must be a non-empty file name)", db_path);
}

constexpr const char* kBackupColumns =
    "num, id, vm_name, image_path, format, COALESCE(parent_backup_id, ''), kind, created_at, size_bytes, status";

BackupRecord backup_from_row(const Statement& st) {
  BackupRecord b;
  b.num = st.column_int(0);
  b.id = st.column_text(1);
  b.vm = st.column_text(2);
  b.image_path = st.column_text(3);
  b.format = st.column_text(4);
  b.parent_id = st.column_text(5);
  b.kind = st.column_text(6);
  b.created_at = time_column(st, 7);
  b.size = static_cast<uint64_t>(st.column_int(8));
  b.status = st.column_text(9);
  return b;
}

// Fills `disks` of each record (rows of backup_disks; a backup without any,
// written by an older build after the migration, is its disk 0).
void load_disks(sqlite3* db, const std::string& path, std::vector<BackupRecord>& backups) {
  Statement st(db, path, "SELECT image_path, format FROM backup_disks WHERE backup_id = ?1 ORDER BY disk");
  for (BackupRecord& b : backups) {
    st.reset();
    st.bind(1, b.id);
    b.disks.clear();
    while (st.step()) b.disks.push_back(BackupDisk{st.column_text(0), st.column_text(1)});
    if (b.disks.empty()) b.disks.push_back(BackupDisk{b.image_path, b.format});
  }
}

constexpr const char* kVolumeColumns =
    "id, backup_id, name, fs_type, offset_bytes, length_bytes,"
    " journal_state, journal_transactions, journal_blocks, journal_note, backend";

VolumeRecord volume_from_row(const Statement& st) {
  VolumeRecord v;
  v.id = st.column_int(0);
  v.backup_id = st.column_text(1);
  v.name = st.column_text(2);
  v.fs_type = st.column_text(3);
  v.offset = static_cast<uint64_t>(st.column_int(4));
  v.length = static_cast<uint64_t>(st.column_int(5));
  v.journal_state = st.column_text(6);
  v.journal_transactions = static_cast<uint64_t>(st.column_int(7));
  v.journal_blocks = static_cast<uint64_t>(st.column_int(8));
  v.journal_note = st.column_text(9);
  v.backend = st.column_text(10);
  return v;
}

constexpr const char* kMountColumns =
    "id, backup_id, mount_path, COALESCE(nbd_device, ''), COALESCE(filesystem_type, ''), mount_mode, status, "
    "attach_mode, created_at, last_accessed_at, expires_at, owner_pid, COALESCE(error, ''), "
    "COALESCE(image_reader, '')";

MountRecord mount_from_row(const Statement& st) {
  MountRecord m;
  m.id = st.column_text(0);
  m.backup_id = st.column_text(1);
  m.mount_path = st.column_text(2);
  m.nbd_device = st.column_text(3);
  m.filesystem_type = st.column_text(4);
  m.mount_mode = st.column_text(5);
  m.status = st.column_text(6);
  m.attach_mode = st.column_text(7);
  m.created_at = time_column(st, 8);
  m.last_accessed_at = time_column(st, 9);
  m.expires_at = time_column(st, 10);
  m.owner_pid = st.column_int(11);
  m.error = st.column_text(12);
  m.image_reader = st.column_text(13);
  return m;
}

int read_schema_version(sqlite3* db, const std::string& path) {
  Statement st(db, path, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
  return st.step() ? static_cast<int>(st.column_int(0)) : 0;
}

void apply_migrations(sqlite3* db, const std::string& path) {
  sqlite::exec(db, path,
               "CREATE TABLE IF NOT EXISTS schema_migrations ("
               " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
  Transaction tx(db, path);
  const int current = read_schema_version(db, path);
  const int latest = Catalog::latest_schema_version();
  if (current > latest)
    throw Error(EIO,
                "catalog schema version " + std::to_string(current) + " is newer than this program understands (" +
                    std::to_string(latest) + ")",
                path);
  // Each migration not yet recorded is applied, not only those above the
  // highest: numbers are handed out per feature and may land out of order.
  std::set<int64_t> applied;
  {
    Statement st(db, path, "SELECT version FROM schema_migrations");
    while (st.step()) applied.insert(st.column_int(0));
  }
  for (const Migration& m : kMigrations) {
    if (applied.contains(m.version)) continue;
    sqlite::exec(db, path, m.sql);
    Statement ins(db, path, "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)");
    ins.bind(1, static_cast<int64_t>(m.version)).bind(2, to_iso8601(now_seconds())).run();
    log::info("catalog_migrated", {{"db", path}, {"version", std::to_string(m.version)}});
  }
  tx.commit();
}

}  // namespace

// ---- time ------------------------------------------------------------------

std::string to_iso8601(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  if (!::gmtime_r(&t, &tm)) return "1970-01-01T00:00:00Z";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::optional<int64_t> parse_iso8601(const std::string& text) {
  size_t pos = 0;
  auto number = [&](size_t digits, int& out) {
    if (pos + digits > text.size()) return false;
    int v = 0;
    for (size_t i = 0; i < digits; ++i) {
      const char c = text[pos + i];
      if (!std::isdigit(static_cast<unsigned char>(c))) return false;
      v = v * 10 + (c - '0');
    }
    out = v;
    pos += digits;
    return true;
  };
  auto literal = [&](char c) {
    if (pos < text.size() && text[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  };

  int year = 0, mon = 0, day = 0, hour = 0, min = 0, sec = 0;
  if (!number(4, year) || !literal('-') || !number(2, mon) || !literal('-') || !number(2, day)) return std::nullopt;
  if (pos < text.size()) {
    if (!literal('T') && !literal('t') && !literal(' ')) return std::nullopt;
    if (!number(2, hour) || !literal(':') || !number(2, min)) return std::nullopt;
    if (literal(':')) {
      if (!number(2, sec)) return std::nullopt;
      if (literal('.') || literal(',')) {
        const size_t start = pos;
        while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
        if (pos == start) return std::nullopt;
      }
    }
  }
  int64_t offset = 0;
  if (pos < text.size()) {
    if (literal('Z') || literal('z')) {
    } else if (text[pos] == '+' || text[pos] == '-') {
      const int sign = text[pos] == '-' ? -1 : 1;
      ++pos;
      int oh = 0, om = 0;
      if (!number(2, oh)) return std::nullopt;
      literal(':');
      if (!number(2, om) || oh > 23 || om > 59) return std::nullopt;
      offset = sign * (oh * 3600 + om * 60);
    } else {
      return std::nullopt;
    }
  }
  if (pos != text.size()) return std::nullopt;
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) return std::nullopt;

  struct tm tm {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const time_t t = ::timegm(&tm);
  if (tm.tm_mday != day || tm.tm_mon != mon - 1) return std::nullopt;  // Feb 30 and the like
  return static_cast<int64_t>(t) - offset;
}

// ---- open ------------------------------------------------------------------

int Catalog::latest_schema_version() { return kMigrations[std::size(kMigrations) - 1].version; }

Catalog::Catalog(const std::string& path) : path_(path) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                                 nullptr);
  sqlite::DbPtr db(raw);  // sqlite3_open_v2 hands out a handle even on failure
  if (rc != SQLITE_OK) sqlite::fail(db.get(), path_, "cannot open catalog");
  sqlite3_extended_result_codes(db.get(), 1);
  if (sqlite3_busy_timeout(db.get(), 5000) != SQLITE_OK) sqlite::fail(db.get(), path_, "busy_timeout");
  sqlite::exec(db.get(), path_, "PRAGMA foreign_keys = ON");
  {
    Statement wal(db.get(), path_, "PRAGMA journal_mode = WAL");
    if (!wal.step() || wal.column_text(0) != "wal")
      throw Error(EIO, "cannot switch the catalog to WAL mode (journal_mode is " + wal.column_text(0) + ")", path_);
  }
  sqlite::exec(db.get(), path_, "PRAGMA synchronous = NORMAL");
  apply_migrations(db.get(), path_);
  db_ = db.release();
}

Catalog::~Catalog() { sqlite::DbCloser{}(db_); }

int Catalog::schema_version() {
  std::lock_guard lock(mutex_);
  return read_schema_version(db_, path_);
}

// ---- backups ---------------------------------------------------------------

std::vector<BackupDisk> BackupRecord::all_disks() const {
  if (!disks.empty()) return disks;
  return {BackupDisk{image_path, format}};
}

void Catalog::upsert_backup(const BackupRecord& in) {
  BackupRecord b = in;
  check_name(b.id, "backup id", path_);
  if (b.id == "by-vm") throw Error(EINVAL, "backup id 'by-vm' is reserved (a folder of the restore tree)", path_);
  check_name(b.vm, "vm name", path_);
  static const auto known = [](const std::string& f) { return f == "qcow2" || f == "raw" || f == "vmdk" || f == "vhdx"; };
  if (!known(b.format))
    throw Error(EINVAL, "backup " + b.id + ": format must be qcow2, raw, vmdk or vhdx, not '" + b.format + "'", path_);
  if (b.disks.empty()) b.disks.push_back(BackupDisk{b.image_path, b.format});
  if (b.disks.front().image_path != b.image_path || b.disks.front().format != b.format)
    throw Error(EINVAL, "backup " + b.id + ": disk 0 must be the image_path/format of the backup", path_);
  for (const BackupDisk& d : b.disks) {
    if (d.image_path.empty()) throw Error(EINVAL, "backup " + b.id + ": a disk has no image path", path_);
    if (!known(d.format))
      throw Error(EINVAL, "backup " + b.id + ": disk format must be qcow2, raw, vmdk or vhdx, not '" + d.format + "'", path_);
  }
  if (b.kind.empty()) b.kind = b.parent_id.empty() ? "full" : "incremental";
  if (b.kind != "full" && b.kind != "incremental")
    throw Error(EINVAL, "backup " + b.id + ": kind must be full or incremental, not '" + b.kind + "'", path_);
  if (b.parent_id == b.id) throw Error(EINVAL, "backup " + b.id + " cannot be its own parent", path_);
  if (b.status.empty()) b.status = "completed";

  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  if (!b.parent_id.empty()) {
    Statement p(db_, path_, "SELECT 1 FROM backup_jobs WHERE id = ?1");
    p.bind(1, b.parent_id);
    if (!p.step()) throw Error(ENOENT, "backup " + b.id + ": parent '" + b.parent_id + "' is not in the catalog", path_);
  }
  Statement st(db_, path_,
               "INSERT INTO backup_jobs (id, vm_name, image_path, format, parent_backup_id, kind, created_at,"
               " size_bytes, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
               " ON CONFLICT(id) DO UPDATE SET vm_name = excluded.vm_name, image_path = excluded.image_path,"
               " format = excluded.format, parent_backup_id = excluded.parent_backup_id, kind = excluded.kind,"
               " created_at = excluded.created_at, size_bytes = excluded.size_bytes, status = excluded.status");
  st.bind(1, b.id)
      .bind(2, b.vm)
      .bind(3, b.image_path)
      .bind(4, b.format)
      .bind_text_or_null(5, b.parent_id)
      .bind(6, b.kind)
      .bind(7, to_iso8601(b.created_at))
      .bind(8, static_cast<int64_t>(b.size))
      .bind(9, b.status)
      .run();
  {
    Statement del(db_, path_, "DELETE FROM backup_disks WHERE backup_id = ?1");
    del.bind(1, b.id).run();
    Statement ins(db_, path_, "INSERT INTO backup_disks (backup_id, disk, image_path, format) VALUES (?1, ?2, ?3, ?4)");
    for (size_t k = 0; k < b.disks.size(); ++k) {
      ins.reset();
      ins.bind(1, b.id).bind(2, static_cast<int64_t>(k)).bind(3, b.disks[k].image_path).bind(4, b.disks[k].format).run();
    }
  }
  tx.commit();
}

std::vector<BackupRecord> Catalog::list_backups() {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_,
               (std::string("SELECT ") + kBackupColumns + " FROM backup_jobs ORDER BY vm_name, created_at, id").c_str());
  std::vector<BackupRecord> out;
  while (st.step()) out.push_back(backup_from_row(st));
  load_disks(db_, path_, out);
  return out;
}

std::optional<BackupRecord> Catalog::find_backup(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, (std::string("SELECT ") + kBackupColumns + " FROM backup_jobs WHERE id = ?1").c_str());
  st.bind(1, id);
  if (!st.step()) return std::nullopt;
  std::vector<BackupRecord> one{backup_from_row(st)};
  load_disks(db_, path_, one);
  return std::move(one.front());
}

bool Catalog::remove_backup(const std::string& id) {
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  Statement st(db_, path_, "DELETE FROM backup_jobs WHERE id = ?1");
  st.bind(1, id).run();
  const bool removed = sqlite3_changes(db_) > 0;
  tx.commit();
  return removed;
}

// ---- volumes ---------------------------------------------------------------

int64_t Catalog::ensure_volume(const VolumeRecord& v) {
  if (v.name.empty()) throw Error(EINVAL, "volume of " + v.backup_id + " has no name", path_);
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  {
    Statement b(db_, path_, "SELECT 1 FROM backup_jobs WHERE id = ?1");
    b.bind(1, v.backup_id);
    if (!b.step()) throw Error(ENOENT, "backup '" + v.backup_id + "' is not in the catalog", path_);
  }
  int64_t id = 0;
  {
    Statement sel(db_, path_, "SELECT id FROM volumes WHERE backup_id = ?1 AND name = ?2");
    sel.bind(1, v.backup_id).bind(2, v.name);
    if (sel.step()) id = sel.column_int(0);
  }
  const std::string fs_type = v.fs_type.empty() ? "unknown" : v.fs_type;
  if (id != 0) {
    Statement up(db_, path_, "UPDATE volumes SET fs_type = ?2, offset_bytes = ?3, length_bytes = ?4 WHERE id = ?1");
    up.bind(1, id).bind(2, fs_type).bind(3, static_cast<int64_t>(v.offset)).bind(4, static_cast<int64_t>(v.length));
    up.run();
  } else {
    {
      // The next AUTOINCREMENT id; refuse clearly rather than through CHECK.
      Statement seq(db_, path_, "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'volumes'), 0)");
      if (seq.step() && seq.column_int(0) >= kMaxVolumeId)
        throw Error(ENOSPC, "volume ids exhausted (node-id namespace holds " + std::to_string(kMaxVolumeId) + ")",
                    path_);
    }
    Statement ins(db_, path_,
                  "INSERT INTO volumes (backup_id, name, fs_type, offset_bytes, length_bytes)"
                  " VALUES (?1, ?2, ?3, ?4, ?5)");
    ins.bind(1, v.backup_id)
        .bind(2, v.name)
        .bind(3, fs_type)
        .bind(4, static_cast<int64_t>(v.offset))
        .bind(5, static_cast<int64_t>(v.length))
        .run();
    id = sqlite3_last_insert_rowid(db_);
  }
  {
    Statement journal(db_, path_,
                      "UPDATE volumes SET journal_state = ?2, journal_transactions = ?3, journal_blocks = ?4,"
                      " journal_note = ?5, backend = ?6 WHERE id = ?1");
    journal.bind(1, id)
        .bind(2, v.journal_state)
        .bind(3, static_cast<int64_t>(v.journal_transactions))
        .bind(4, static_cast<int64_t>(v.journal_blocks))
        .bind(5, v.journal_note)
        .bind(6, v.backend)
        .run();
  }
  tx.commit();
  return id;
}

std::vector<VolumeRecord> Catalog::volumes_of(const std::string& backup_id) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_,
               (std::string("SELECT ") + kVolumeColumns + " FROM volumes WHERE backup_id = ?1 ORDER BY id").c_str());
  st.bind(1, backup_id);
  std::vector<VolumeRecord> out;
  while (st.step()) out.push_back(volume_from_row(st));
  return out;
}

std::vector<VolumeRecord> Catalog::list_volumes() {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, (std::string("SELECT ") + kVolumeColumns + " FROM volumes ORDER BY id").c_str());
  std::vector<VolumeRecord> out;
  while (st.step()) out.push_back(volume_from_row(st));
  return out;
}

// ---- restore_mounts --------------------------------------------------------

std::string Catalog::begin_mount(const std::string& backup_id, const std::string& mount_path,
                                 const std::string& attach_mode, int64_t idle_timeout) {
  const std::string mode = attach_mode.empty() ? "userspace" : attach_mode;
  if (mode != "userspace" && mode != "kernel")
    throw Error(EINVAL, "attach mode must be userspace or kernel, not '" + mode + "'", path_);
  const int64_t now = now_seconds();
  std::string id = new_uuid_v4();

  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  {
    Statement b(db_, path_, "SELECT 1 FROM backup_jobs WHERE id = ?1");
    b.bind(1, backup_id);
    if (!b.step()) throw Error(ENOENT, "backup '" + backup_id + "' is not in the catalog", path_);
  }
  Statement st(db_, path_,
               "INSERT INTO restore_mounts (id, backup_id, mount_path, nbd_device, filesystem_type, mount_mode,"
               " status, created_at, last_accessed_at, expires_at, attach_mode, owner_pid, error)"
               " VALUES (?1, ?2, ?3, NULL, NULL, 'read-only', 'mounting', ?4, ?4, ?5, ?6, ?7, NULL)");
  st.bind(1, id)
      .bind(2, backup_id)
      .bind(3, mount_path)
      .bind(4, to_iso8601(now))
      .bind(5, to_iso8601(now + idle_timeout))
      .bind(6, mode)
      .bind(7, static_cast<int64_t>(::getpid()))
      .run();
  tx.commit();
  own_mounts_.insert(id);
  return id;
}

void Catalog::set_mount_status(const std::string& mount_id, const std::string& status,
                               const std::string& filesystem_type, const std::string& error) {
  if (status != "mounting" && status != "mounted" && status != "unmounting" && status != "failed")
    throw Error(EINVAL, "mount status must be mounting, mounted, unmounting or failed, not '" + status + "'", path_);
  std::lock_guard lock(mutex_);
  // A row removed meanwhile (its backup was removed) is not an error: nothing to update.
  Statement st(db_, path_,
               "UPDATE restore_mounts SET status = ?2,"
               " filesystem_type = CASE WHEN ?3 = '' THEN filesystem_type ELSE ?3 END,"
               " error = CASE WHEN ?4 <> '' THEN ?4 WHEN ?2 = 'failed' THEN error ELSE NULL END"
               " WHERE id = ?1");
  st.bind(1, mount_id).bind(2, status).bind(3, filesystem_type).bind(4, error).run();
}

void Catalog::set_mount_image_reader(const std::string& mount_id, const std::string& image_reader) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, "UPDATE restore_mounts SET image_reader = NULLIF(?2, '') WHERE id = ?1");
  st.bind(1, mount_id).bind(2, image_reader).run();
}

void Catalog::set_mount_attach_mode(const std::string& mount_id, const std::string& attach_mode) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, "UPDATE restore_mounts SET attach_mode = ?2 WHERE id = ?1");
  st.bind(1, mount_id).bind(2, attach_mode).run();
}

void Catalog::touch_mounts(const std::vector<std::pair<std::string, int64_t>>& accesses, int64_t idle_timeout) {
  if (accesses.empty()) return;
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  Statement st(db_, path_, "UPDATE restore_mounts SET last_accessed_at = ?2, expires_at = ?3 WHERE id = ?1");
  for (const auto& [id, when] : accesses) {
    st.bind(1, id).bind(2, to_iso8601(when)).bind(3, to_iso8601(when + idle_timeout)).run();
    st.reset();
  }
  tx.commit();
}

void Catalog::end_mount(const std::string& mount_id) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, "DELETE FROM restore_mounts WHERE id = ?1");
  st.bind(1, mount_id).run();
  own_mounts_.erase(mount_id);
}

std::vector<MountRecord> Catalog::list_mounts() {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_,
               (std::string("SELECT ") + kMountColumns + " FROM restore_mounts ORDER BY created_at, id").c_str());
  std::vector<MountRecord> out;
  while (st.step()) out.push_back(mount_from_row(st));
  return out;
}

bool Catalog::claim_kernel_device(const KernelDeviceRecord& d) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_,
               "INSERT INTO kernel_devices (device, kind, backup_id, mount_id, owner_pid, helper_pid,"
               " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (device) DO NOTHING");
  st.bind(1, d.device)
      .bind(2, d.kind)
      .bind(3, d.backup_id)
      .bind(4, d.mount_id)
      .bind(5, d.owner_pid)
      .bind(6, d.helper_pid)
      .bind(7, to_iso8601(now_seconds()))
      .run();
  return sqlite3_changes(db_) == 1;
}

void Catalog::set_kernel_device_helper(const std::string& device, int64_t helper_pid) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, "UPDATE kernel_devices SET helper_pid = ?2 WHERE device = ?1");
  st.bind(1, device).bind(2, helper_pid).run();
}

void Catalog::release_kernel_device(const std::string& device) {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, "DELETE FROM kernel_devices WHERE device = ?1");
  st.bind(1, device).run();
}

std::vector<KernelDeviceRecord> Catalog::kernel_devices() {
  std::lock_guard lock(mutex_);
  Statement st(db_, path_,
               "SELECT device, kind, backup_id, mount_id, owner_pid, helper_pid FROM kernel_devices ORDER BY device");
  std::vector<KernelDeviceRecord> out;
  while (st.step())
    out.push_back({st.column_text(0), st.column_text(1), st.column_text(2), st.column_text(3), st.column_int(4),
                   st.column_int(5)});
  return out;
}

std::vector<MountRecord> Catalog::reconcile_all_mounts() {
  static const std::string kReason = "reconciled after unclean shutdown";
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  std::vector<MountRecord> earlier_failed, stale;
  {
    Statement st(db_, path_,
                 (std::string("SELECT ") + kMountColumns + " FROM restore_mounts ORDER BY created_at, id").c_str());
    while (st.step()) {
      MountRecord m = mount_from_row(st);
      if (own_mounts_.contains(m.id) || reconciled_.contains(m.id)) continue;  // this run's
      (m.status == "failed" ? earlier_failed : stale).push_back(std::move(m));
    }
  }
  for (const MountRecord& m : earlier_failed) {
    Statement del(db_, path_, "DELETE FROM restore_mounts WHERE id = ?1");
    del.bind(1, m.id).run();
  }
  for (const MountRecord& m : stale) {
    Statement up(db_, path_, "UPDATE restore_mounts SET status = 'failed', error = ?2 WHERE id = ?1");
    up.bind(1, m.id).bind(2, kReason).run();
  }
  tx.commit();
  for (const MountRecord& m : stale) reconciled_.insert(m.id);
  return stale;
}

// ---- tenants ---------------------------------------------------------------

bool valid_tenant_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  const auto alnum = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front())) return false;
  for (char c : name)
    if (!alnum(c) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

namespace {

// The num of tenant `name` (matched ignoring case, like the UNIQUE
// constraint), or throws Error(ENOENT) naming it.
int64_t tenant_num(sqlite3* db, const std::string& path, const std::string& name) {
  Statement st(db, path, "SELECT num FROM tenants WHERE name = ?1");
  st.bind(1, name);
  if (!st.step()) throw Error(ENOENT, "no tenant '" + name + "' in the catalog", path);
  return st.column_int(0);
}

}  // namespace

TenantRecord Catalog::add_tenant(const std::string& name, std::optional<uint32_t> uid, std::optional<uint32_t> gid) {
  if (!valid_tenant_name(name))
    throw Error(EINVAL,
                "invalid tenant name '" + name +
                    "' (1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)",
                path_);
  // The operator's share and export are [sendense-restore] and /sendense/restore.
  if (strcasecmp(name.c_str(), "restore") == 0)
    throw Error(EINVAL, "tenant name '" + name + "' is reserved (the operator's share is sendense-restore)", path_);
  // (uid_t)-1 means "leave unchanged" to chown and "no user" to Samba/NFS.
  constexpr uint32_t kNoId = 4294967295u;
  if (uid == kNoId) throw Error(EINVAL, "tenant " + name + ": uid 4294967295 is not a user id", path_);
  if (gid == kNoId) throw Error(EINVAL, "tenant " + name + ": gid 4294967295 is not a group id", path_);

  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  {
    Statement same(db_, path_, "SELECT name FROM tenants WHERE name = ?1");
    same.bind(1, name);
    if (same.step()) {
      const std::string existing = same.column_text(0);
      throw Error(EEXIST,
                  existing == name ? "tenant '" + name + "' already exists"
                                   : "tenant '" + existing + "' already exists (names are unique ignoring case)",
                  path_);
    }
  }
  {
    Statement seq(db_, path_, "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tenants'), 0)");
    if (seq.step() && seq.column_int(0) >= kMaxTenantNum)
      throw Error(ENOSPC,
                  "tenant numbers exhausted (" + std::to_string(kMaxTenantNum) +
                      ": a tenant's export id 1000 + num must fit ganesha's 16 bits)",
                  path_);
  }
  Statement ins(db_, path_, "INSERT INTO tenants (name, uid, gid, created_at) VALUES (?1, ?2, ?3, ?4)");
  ins.bind(1, name);
  if (uid) ins.bind(2, static_cast<int64_t>(*uid)); else ins.bind_null(2);
  if (gid) ins.bind(3, static_cast<int64_t>(*gid)); else ins.bind_null(3);
  ins.bind(4, to_iso8601(now_seconds())).run();
  TenantRecord t;
  t.num = sqlite3_last_insert_rowid(db_);
  t.name = name;
  t.uid = uid;
  t.gid = gid;
  tx.commit();
  return t;
}

void Catalog::remove_tenant(const std::string& name) {
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  const int64_t num = tenant_num(db_, path_, name);
  Statement st(db_, path_, "DELETE FROM tenants WHERE num = ?1");  // tenant_vms rows go by ON DELETE CASCADE
  st.bind(1, num).run();
  tx.commit();
}

void Catalog::assign_vm(const std::string& tenant, const std::string& vm) {
  check_name(vm, "vm name", path_);
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  const int64_t num = tenant_num(db_, path_, tenant);
  {
    Statement owner(db_, path_,
                    "SELECT t.num, t.name FROM tenant_vms v JOIN tenants t ON t.num = v.tenant_num WHERE v.vm_name = ?1");
    owner.bind(1, vm);
    if (owner.step()) {
      if (owner.column_int(0) == num) return;  // already this tenant's: nothing to change
      throw Error(EBUSY,
                  "vm '" + vm + "' is owned by tenant '" + owner.column_text(1) + "' (unassign it there first)",
                  path_);
    }
  }
  Statement ins(db_, path_, "INSERT INTO tenant_vms (vm_name, tenant_num) VALUES (?1, ?2)");
  ins.bind(1, vm).bind(2, num).run();
  tx.commit();
}

void Catalog::unassign_vm(const std::string& tenant, const std::string& vm) {
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  const int64_t num = tenant_num(db_, path_, tenant);
  Statement del(db_, path_, "DELETE FROM tenant_vms WHERE vm_name = ?1 AND tenant_num = ?2");
  del.bind(1, vm).bind(2, num).run();
  if (sqlite3_changes(db_) == 0)
    throw Error(ENOENT, "vm '" + vm + "' is not assigned to tenant '" + tenant + "'", path_);
  tx.commit();
}

std::vector<TenantRecord> Catalog::list_tenants() {
  std::lock_guard lock(mutex_);
  std::vector<TenantRecord> out;
  {
    Statement st(db_, path_, "SELECT num, name, uid, gid FROM tenants ORDER BY name COLLATE BINARY");
    while (st.step()) {
      TenantRecord t;
      t.num = st.column_int(0);
      t.name = st.column_text(1);
      if (!st.column_is_null(2)) t.uid = static_cast<uint32_t>(st.column_int(2));
      if (!st.column_is_null(3)) t.gid = static_cast<uint32_t>(st.column_int(3));
      out.push_back(std::move(t));
    }
  }
  Statement vms(db_, path_, "SELECT vm_name FROM tenant_vms WHERE tenant_num = ?1 ORDER BY vm_name COLLATE BINARY");
  for (TenantRecord& t : out) {
    vms.reset();
    vms.bind(1, t.num);
    while (vms.step()) t.vms.push_back(vms.column_text(0));
  }
  return out;
}

}  // namespace sendense
