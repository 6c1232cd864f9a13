// The SQLite catalog: backups, their volumes (the node-id namespace), and the
// restore_mounts rows of attached backups. Thread-safe: one connection behind
// a mutex; callers keep it off hot paths (reads never wait on it).
//
// Times in the API are Unix seconds (UTC); the database stores ISO-8601 UTC
// text ("2026-11-24T04:30:00Z") like the original design's timestamps.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct sqlite3;

namespace sendense {

// One disk image of a backup (one per VM disk), in disk order.
struct BackupDisk {
  std::string image_path;     // absolute path of the disk's top image
  std::string format;         // "qcow2" or "raw"
  bool operator==(const BackupDisk&) const = default;
};

struct BackupRecord {
  int64_t num = 0;            // permanent integer key (node-id namespace of backup dirs); 0 = unassigned
  std::string id;             // "backup-<vm>-<YYYYMMDDhhmmss>" or any unique name
  std::string vm;
  std::string image_path;     // absolute path of the top image
  std::string format;         // "qcow2", "raw", "vmdk" or "vhdx"
  std::string parent_id;      // backup this incremental builds on ("" for a full)
  std::string kind;           // "full" or "incremental"
  int64_t created_at = 0;     // backup time
  uint64_t size = 0;          // bytes of the image file
  std::string status = "completed";
  // Every disk, disk 0 first; disk 0 is image_path/format (kept for
  // single-disk readers of the table). Empty in a record built by a caller
  // means one disk: image_path/format. Records read from the catalog always
  // list every disk.
  std::vector<BackupDisk> disks;

  // `disks`, or the single disk image_path/format when it is empty.
  std::vector<BackupDisk> all_disks() const;
};

struct VolumeRecord {
  int64_t id = 0;             // permanent, never reused (AUTOINCREMENT)
  std::string backup_id;
  std::string name;           // "part1", "disk"
  std::string fs_type;        // "ext4", ...
  uint64_t offset = 0;
  uint64_t length = 0;
  // What the reader did about the volume's journal at the last attach
  // (Filesystem::journal()); journal_state "" until a reader opened it.
  // (Initialisers keep brace-initialised records without them warning-free.)
  std::string journal_state{};
  uint64_t journal_transactions = 0;
  uint64_t journal_blocks = 0;
  std::string journal_note{};
  std::string backend{};      // "userspace" or "kernel": who served it at the last attach
};

// A kernel device held by the kernel attach backend (kernel_devices row).
struct KernelDeviceRecord {
  std::string device;         // "/dev/nbd3"
  std::string kind;           // "nbd" or "loop"
  std::string backup_id;
  std::string mount_id;       // restore_mounts.id of the attach holding it
  int64_t owner_pid = 0;      // the daemon
  int64_t helper_pid = 0;     // qemu-nbd serving it (0 before it started)
};

struct MountRecord {
  std::string id;             // UUID
  std::string backup_id;
  std::string mount_path;     // the FUSE mount point serving it
  std::string nbd_device;     // "" for the userspace backend
  std::string filesystem_type;// comma-separated types of the served volumes
  std::string mount_mode = "read-only";
  std::string status;         // mounting, mounted, unmounting, failed
  std::string attach_mode;    // "userspace" (kernel later)
  int64_t created_at = 0;
  int64_t last_accessed_at = 0;
  int64_t expires_at = 0;     // last_accessed_at + idle timeout
  int64_t owner_pid = 0;      // daemon that made the row
  std::string error;          // why it failed
  std::string image_reader;   // "qcow2" (ours), "raw", "qemu-nbd" ("" until the image is open)
};

// A customer that owns VMs: its view of the tree is tenants/<name>/ (the
// backups of its VMs), shared or exported on its own.
struct TenantRecord {
  int64_t num = 0;            // permanent key, never reused (AUTOINCREMENT): node ids of tenants/<name>/ and export ids derive from it
  std::string name;           // valid_tenant_name()
  std::optional<uint32_t> uid, gid;   // owner shown inside the tenant's view; unset = 0 (root)
  std::vector<std::string> vms;       // the VMs it owns, sorted
};

// [A-Za-z0-9][A-Za-z0-9._-]{0,63}: usable as a folder name, a Samba share
// name suffix and in a ganesha config without quoting.
bool valid_tenant_name(std::string_view name);

// The highest tenant num add_tenant hands out: ganesha export ids are 16-bit
// and a tenant's is 1000 + num (tools/cli/export_stanza.h).
inline constexpr int64_t kMaxTenantNum = 65535 - 1000;

// An API token of the HTTP service (sendense-restore-web). The secret is
// shown once by create_api_token; the catalog keeps its SHA-256 only.
struct ApiTokenRecord {
  std::string id;             // "tok-" + 16 hex: names the token in lists and the audit log
  std::string tenant;         // "" for an operator token (the whole tree)
  int64_t tenant_num = 0;     // 0 for an operator token
  std::string label;
  int64_t created_at = 0;
  int64_t expires_at = 0;     // 0 = never
  int64_t revoked_at = 0;     // 0 = not revoked

  bool revoked() const { return revoked_at != 0; }
  bool expired_at(int64_t now) const { return expires_at != 0 && now >= expires_at; }
};

struct NewApiToken {
  ApiTokenRecord record;
  std::string secret;         // "sdr_" + 43 base64url characters (256 random bits)
};

// One download or archive served by the HTTP service.
struct AuditRecord {
  int64_t at = 0;
  std::string tenant;         // "" for the operator
  std::string token_id;
  std::string action;         // "download", "archive"
  std::string backup_id;
  std::string path;
  uint64_t bytes = 0;         // bytes sent
  std::string result;         // "ok", "client-closed", "error: ..."
};

class Catalog {
 public:
  // Opens (creating if needed) the database, applies pending numbered
  // migrations, sets WAL mode, a busy timeout and foreign keys on.
  // Throws Error(EIO) naming the file on failure.
  explicit Catalog(const std::string& path);
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  const std::string& path() const { return path_; }
  int schema_version();
  static int latest_schema_version();  // the highest migration this build knows

  // Backups. upsert keeps `num` of an existing id.
  void upsert_backup(const BackupRecord& b);
  std::vector<BackupRecord> list_backups();            // ordered by vm, created_at
  std::optional<BackupRecord> find_backup(const std::string& id);
  bool remove_backup(const std::string& id);           // cascades to volumes and mounts

  // Volumes: returns the permanent id of (backup, name), creating the row
  // the first time and updating type/offset/length/journal report after.
  int64_t ensure_volume(const VolumeRecord& v);
  std::vector<VolumeRecord> volumes_of(const std::string& backup_id);
  std::vector<VolumeRecord> list_volumes();

  // restore_mounts lifecycle.
  std::string begin_mount(const std::string& backup_id, const std::string& mount_path,
                          const std::string& attach_mode, int64_t idle_timeout);  // status mounting; returns UUID
  void set_mount_status(const std::string& mount_id, const std::string& status,
                        const std::string& filesystem_type = {}, const std::string& error = {});
  // Which reader serves the attach's image (BlockDevice::reader()).
  void set_mount_image_reader(const std::string& mount_id, const std::string& image_reader);
  // "kernel" once any volume of the attach is served by the kernel backend.
  void set_mount_attach_mode(const std::string& mount_id, const std::string& attach_mode);
  // Kernel devices: claim is false if another row holds `device` (another
  // daemon, or a dead run not yet reconciled).
  bool claim_kernel_device(const KernelDeviceRecord& d);
  void set_kernel_device_helper(const std::string& device, int64_t helper_pid);
  void release_kernel_device(const std::string& device);
  std::vector<KernelDeviceRecord> kernel_devices();
  // One transaction for the whole batch: (mount id, last access time).
  void touch_mounts(const std::vector<std::pair<std::string, int64_t>>& accesses, int64_t idle_timeout);
  void end_mount(const std::string& mount_id);         // deletes the row
  std::vector<MountRecord> list_mounts();
  // Every row not begun through this Catalog object, whatever its
  // mount_path, is from a run that is gone: the caller holds the per-catalog
  // daemon lock. In one transaction: rows of such runs that were already
  // `failed` (left by an earlier reconciliation) are deleted, then the rest
  // are marked failed with error "reconciled after unclean shutdown" and
  // returned as they were found. At most one generation of failed rows stays.
  // A second call on the same object neither reports nor deletes the rows
  // the first one marked.
  std::vector<MountRecord> reconcile_all_mounts();

  // Tenants. Names are unique ignoring case (Samba share names and the
  // folders SMB clients see are case-insensitive): adding "Acme" when "acme"
  // exists is EEXIST. A VM has at most one owner and need not have backups
  // yet (assign first, import later).
  // add_tenant: Error EINVAL for a bad name, the name "restore" (any case:
  // the operator's share is sendense-restore) or a uid/gid of 4294967295
  // (the "no id" value of chown), EEXIST if it exists, ENOSPC past
  // kMaxTenantNum.
  TenantRecord add_tenant(const std::string& name, std::optional<uint32_t> uid, std::optional<uint32_t> gid);
  void remove_tenant(const std::string& name);                       // ENOENT; also drops its VM assignments
  // ENOENT no such tenant; EINVAL a vm name that cannot be a folder name;
  // EBUSY naming the current owner if another tenant owns the VM; assigning
  // again to the same tenant is a no-op.
  void assign_vm(const std::string& tenant, const std::string& vm);
  void unassign_vm(const std::string& tenant, const std::string& vm);  // ENOENT if not assigned to that tenant
  std::vector<TenantRecord> list_tenants();                            // ordered by name (bytewise)

  // API tokens (catalog/api_tokens.cpp). tenant "" makes an operator token;
  // else Error(ENOENT) for no such tenant. expires_at 0 = never.
  NewApiToken create_api_token(const std::string& tenant, int64_t expires_at, const std::string& label);
  std::vector<ApiTokenRecord> list_api_tokens();                       // ordered by created_at, id
  void revoke_api_token(const std::string& id);                        // ENOENT; revoking twice is a no-op
  // The token whose secret this is, if it is neither revoked nor expired at `now`.
  std::optional<ApiTokenRecord> authenticate_api_token(const std::string& secret, int64_t now);
  void add_audit(const AuditRecord& r);
  std::vector<AuditRecord> list_audit(size_t limit);                   // newest first

  // Detach requests: the CLI and the web service ask, the daemon's
  // housekeeping takes them (and forgets them) within a tick.
  void request_detach(const std::string& backup_id);
  std::vector<std::string> take_detach_requests();

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::set<std::string> own_mounts_;  // ids begun through this object (guarded by mutex_)
  std::set<std::string> reconciled_;  // ids marked failed by reconcile_all_mounts (guarded by mutex_)
};

// "2026-11-24T04:30:00Z" from Unix seconds, and back. parse_iso8601 accepts
// "YYYY-MM-DD[T| ]hh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm]" and "YYYY-MM-DD" (UTC
// unless an offset is given); std::nullopt if the text is not such a time.
std::string to_iso8601(int64_t unix_seconds);
std::optional<int64_t> parse_iso8601(const std::string& text);

struct ImportReport {
  std::vector<std::string> added;
  std::vector<std::string> updated;
  std::vector<std::string> unchanged;
  std::vector<std::string> errors;   // "path: reason" (not imported)
  std::vector<std::string> warnings; // "path: note" (imported, e.g. backing file not in the catalog)
  std::vector<std::string> missing;  // ids of cataloged backups under `dir` whose image file is gone (kept)
};

// The format an image is served as: never guessed from its content (a guest
// can write a qcow2 header into its own raw disk).
// `requested` "" means from the file name:
//   ".qcow2", ".qcow" (any case) -> "qcow2"; the file must start with the
//       qcow2 magic, else Error(EINVAL) naming the file.
//   ".raw", ".img"               -> "raw", even with the qcow2 magic.
//   ".vmdk" / ".vhdx"            -> "vmdk" / "vhdx" (read through qemu-nbd;
//       their content is checked by read_image_chain, not here).
//   anything else                -> format "" (not an image by its name).
// `requested` "qcow2", "raw", "vmdk" or "vhdx" is that format (qcow2 must
// have the magic, else Error(EINVAL)); anything else is Error(EINVAL).
// A raw image that starts with the qcow2 magic gets a `warning` that it is
// served as raw. Throws Error naming the file if it cannot be read.
struct FormatChoice {
  std::string format;   // "qcow2", "raw", "vmdk", "vhdx" or ""
  std::string warning;  // "" unless a raw image starts with the qcow2 magic
};
FormatChoice choose_format(const std::string& path, const std::string& requested = {});

// What import makes of one image file, without the catalog: the record
// (canonical image_path, id = file stem, vm and created_at from a
// "backup-<vm>-<YYYYMMDDhhmmss>" name or else the parent folder's name and
// the file's mtime, size, format, kind from the backing file; parent_id
// empty) plus its backing file.
// `format` as in choose_format; a name that tells nothing (with `format` "")
// throws Error(EINVAL) asking for a format.
// A qcow2/vmdk/vhdx image and what it names are validated the way the
// daemon opens it: read_image_chain(image, format, folder of the image). A
// missing, looping, escaping, protocol/json: or undeclared non-qcow2
// backing file, an escaping VMDK extent, throws that Error.
// Throws Error naming the file if it cannot be read or its qcow2 header is
// damaged.
struct ImageDescription {
  BackupRecord record;
  std::string backing_name;   // as stored in the qcow2 header ("" for none)
  std::string backing_path;   // canonical path of the backing file ("" for none)
  std::vector<std::string> warnings;  // "path: note" (e.g. raw with a qcow2 header)
  std::vector<std::string> extents;   // VMDK: canonical paths of the extent files the chain names
};
ImageDescription describe_image(const std::string& path, const std::string& format = {});

// Walks `dir` recursively: every image named *.qcow2/*.qcow (qcow2) or
// *.raw/*.img (raw) becomes a backup (choose_format; other files are
// skipped). Ids/vm/time from "backup-<vm>-<YYYYMMDDhhmmss>" names, else
// vm = parent folder name, time = file mtime, id = file stem. A qcow2 whose
// backing chain the daemon would refuse is an error, not imported; the first
// backing file links an incremental to the backup with that image_path.
// Idempotent.
ImportReport import_repository(Catalog& catalog, const std::string& dir);

}  // namespace sendense
