// Attach lifecycle: the first access inside a backup opens its image,
// partition table and filesystems; idle backups are detached again; at most
// `max_mounts` are attached at once (the least recently used idle one is
// evicted to make room, else EBUSY). Each attach has a restore_mounts row.
//
// A backup is idle when no request is in flight on it (nothing but the table
// holds a reference) and, for the idle detach, none came for idle_timeout.
// Open files and folders hold no reference (restore_tree.h; kernel-backend
// volumes excepted): an NFS server
// that keeps thousands of descriptors open pins nothing, and a request on
// a handle of a detached backup attaches it again. A request that took its
// reference just before a detach finishes on the detached attach (the
// readers close when it lets go); the next one attaches anew.
//
// Locks, in the order they may be taken:
//   1. the backup's attach lock (one per backup id): serialises attaching
//      one backup; other backups attach and serve in parallel; waited for
//      at most kAttachWait, so a repository that hangs fails its callers;
//   2. table_mutex_: the attached_ map and the attaching_ count; held only
//      for map operations, never across I/O or SQLite.
// The read path takes (2) shared for a lookup and touches one atomic.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "catalog/catalog.h"
#include "fuse/catalog_view.h"
#include "fuse/metrics.h"
#include "fuse/worker_client.h"
#include "readers/fs/filesystem.h"
#include "readers/kernel/nbd_device.h"

namespace sendense {

struct AttachedVolume {
  int64_t id = 0;          // volumes.id: the node-id namespace
  std::string name;        // "part1", "disk"
  std::string fs_type;
  std::string backend;     // "userspace" or "kernel"
  FilesystemPtr fs;
};

class AttachedBackup {
 public:
  std::string backup_id;
  int64_t num = 0;
  std::string mount_id;    // restore_mounts.id
  std::vector<AttachedVolume> volumes;
  std::vector<BlockDevicePtr> images;  // the disks' image devices our readers read (not qemu-nbd's)
  // --isolation worker: the worker serving every volume (their fs are its
  // proxies), and the daemon's own descriptors of the images it passed in.
  std::shared_ptr<Worker> worker;
  std::vector<ImageFilePtr> image_files;
  bool worker_failed() const { return worker && worker->failed(); }

  // True once a read found one of the images changed in the repository
  // since the attach (block_device.h): the attach is then replaced. Also
  // sets `change_seen`. `check_now`: stat the image files first (a change
  // no read has met yet is found too).
  bool images_changed(bool check_now = false) const;

  // Outlives the attach: whoever remembers having read through this attach
  // (fuse/node_files.h) can tell later that its image changed, after the
  // attach itself is gone.
  struct ChangeMark {
    std::atomic<bool> seen{false};
  };
  const std::shared_ptr<ChangeMark> change_seen = std::make_shared<ChangeMark>();

  // This attach replaced one whose image changed: the kernel may still
  // cache pages and listings of the old version under the same node ids,
  // so opens of this attach do not keep the kernel's cache.
  bool replaced_changed = false;

  const AttachedVolume* volume(int64_t id) const;
  const AttachedVolume* volume_named(std::string_view name) const;

  void touch();
  // Set when the manager lets go of this attach (detach, eviction): the
  // handles that read through it attach again at their next request.
  std::atomic<bool> detached{false};
  bool current() const {
    return !detached.load(std::memory_order_acquire) && !images_changed() && !worker_failed();
  }
  std::atomic<int64_t> last_access_ms{0};   // steady clock
  std::atomic<int64_t> last_flushed_ms{0};
};

using AttachedBackupPtr = std::shared_ptr<AttachedBackup>;

struct AttachOptions {
  std::chrono::seconds idle_timeout{3600};
  size_t max_mounts = 8;
  std::string mount_path;                      // recorded in restore_mounts
  std::chrono::seconds failure_backoff{3};     // a failed attach is retried after this
  std::chrono::seconds attach_wait{60};        // longest wait for another thread's attach
  FsOpenOptions fs_open;                       // passed to every open_filesystem()
  // --attach: "userspace", "kernel" (every volume the kernel mounts) or
  // "auto" (the kernel only for volumes without a userspace reader).
  std::string attach_mode = "auto";
  // --nbd-devices FIRST-LAST: the kernel backend uses qemu-nbd on this pool
  // where the nbd module is loaded (else qemu-storage-daemon + loop).
  std::optional<kernel::NbdRange> nbd_devices;
  Metrics* metrics = nullptr;                  // attaches, detaches, failures; outlives the manager
  // --isolation: "none" (the readers run in the daemon) or "worker" (one
  // sandboxed worker per attached backup, fuse/worker_client.h; the kernel
  // backend and qemu-nbd images stay in the daemon).
  std::string isolation = "worker";
  WorkerOptions worker;
};

class AttachManager {
 public:
  AttachManager(Catalog& catalog, CatalogView& view, AttachOptions options);
  ~AttachManager();

  // The attached backup, attaching it first when needed; touched.
  // Throws Error: ENOENT (not in the catalog), EBUSY (max mounts reached and
  // none idle), EIO (the attach failed; logged with the backup and cause).
  AttachedBackupPtr acquire(const std::string& backup_id);

  // How many backups are attached now (the metrics gauge).
  size_t attached_count() const;

  // The attached backup if it is attached now (no attach, no touch).
  AttachedBackupPtr find(const std::string& backup_id) const;

  const AttachOptions& options() const { return options_; }

  // Housekeeping, called by the daemon's background thread.
  void detach_idle();
  void flush_access_times();
  void detach(const std::string& backup_id, std::string_view reason);
  // Detaches `backup` only if it is still the attach of its backup id (a
  // thread that saw an old attach must not drop the new one).
  void detach_if_current(const AttachedBackupPtr& backup, std::string_view reason);
  void detach_all(std::string_view reason);
  // Detaches what `sendense-restore detach` and the web service asked for
  // (Catalog::request_detach); an id not attached is forgotten.
  void detach_requested();

 private:
  AttachedBackupPtr attach(const BackupRecord& record);
  void count_failure(std::string_view cause) const;
  // Detaches `backup` if its worker failed (reason worker_failed) and holds
  // the next attach back for the failure backoff. True if it did.
  bool drop_failed_worker(const AttachedBackupPtr& backup);
  void make_room(const std::string& for_backup);
  void release(const AttachedBackupPtr& backup, std::string_view reason);
  std::shared_ptr<std::timed_mutex> attach_lock(const std::string& backup_id);
  AttachedBackupPtr least_recently_used_idle() const;  // table_mutex_ held
  // Detaches the least recently used idle backup now (a kernel device pool
  // is full); false if every attached backup is in use. Takes table_mutex_.
  bool evict_one_idle(const std::string& for_backup);

  Catalog& catalog_;
  CatalogView& view_;
  AttachOptions options_;

  mutable std::shared_mutex table_mutex_;
  std::unordered_map<std::string, AttachedBackupPtr> attached_;
  size_t attaching_ = 0;
  std::condition_variable_any attach_done_;   // attaching_ went down

  std::mutex locks_mutex_;
  std::unordered_map<std::string, std::shared_ptr<std::timed_mutex>> attach_locks_;

  struct Failure {
    std::chrono::steady_clock::time_point when;
    int code;
    std::string message;
    std::string mount_id;
  };
  std::mutex failures_mutex_;
  std::unordered_map<std::string, Failure> failures_;
};

int64_t steady_now_ms();

}  // namespace sendense
