#include "fuse/attach_manager.h"

#include <algorithm>
#include <filesystem>
#include <optional>

#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/engine/open_backup.h"
#include "readers/fs/paged_listing.h"
#include "readers/fs/registry.h"
#include "readers/kernel/kernel_backup.h"
#include "readers/volume/volume.h"

namespace sendense {

int64_t steady_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

namespace {
int64_t wall_now() {
  using namespace std::chrono;
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}
}  // namespace

const AttachedVolume* AttachedBackup::volume(int64_t id) const {
  for (const auto& v : volumes)
    if (v.id == id) return &v;
  return nullptr;
}

const AttachedVolume* AttachedBackup::volume_named(std::string_view name) const {
  for (const auto& v : volumes)
    if (v.name == name) return &v;
  return nullptr;
}

bool AttachedBackup::images_changed(bool check_now) const {
  if (change_seen->seen.load(std::memory_order_acquire)) return true;
  bool changed = false;
  for (const auto& d : images) changed = (check_now ? d->check_changed() : d->changed()) || changed;
  for (const auto& f : image_files) changed = (check_now ? f->check_changed() : f->changed()) || changed;
  if (changed) change_seen->seen.store(true, std::memory_order_release);
  return changed;
}

void AttachedBackup::touch() { last_access_ms.store(steady_now_ms(), std::memory_order_relaxed); }

AttachManager::AttachManager(Catalog& catalog, CatalogView& view, AttachOptions options)
    : catalog_(catalog), view_(view), options_(std::move(options)) {
  // A spare worker takes the worker's start off the first listing of a
  // backup (fuse/worker_client.h).
  if (options_.isolation == "worker" && options_.attach_mode != "kernel" && !options_.worker.spares)
    options_.worker.spares = std::make_shared<SpareWorkers>(options_.worker);
}

AttachManager::~AttachManager() = default;

std::shared_ptr<std::timed_mutex> AttachManager::attach_lock(const std::string& backup_id) {
  std::lock_guard lock(locks_mutex_);
  auto& slot = attach_locks_[backup_id];
  if (!slot) slot = std::make_shared<std::timed_mutex>();
  return slot;
}

AttachedBackupPtr AttachManager::least_recently_used_idle() const {
  AttachedBackupPtr victim;
  for (const auto& [id, b] : attached_) {
    if (b.use_count() > 1) continue;  // requests in flight
    if (!victim || b->last_access_ms.load() < victim->last_access_ms.load()) victim = b;
  }
  return victim;
}

size_t AttachManager::attached_count() const {
  std::shared_lock lock(table_mutex_);
  return attached_.size();
}

void AttachManager::count_failure(std::string_view cause) const {
  if (options_.metrics) options_.metrics->failure(cause);
}

AttachedBackupPtr AttachManager::find(const std::string& backup_id) const {
  std::shared_lock lock(table_mutex_);
  auto it = attached_.find(backup_id);
  return it == attached_.end() ? nullptr : it->second;
}

AttachedBackupPtr AttachManager::acquire(const std::string& backup_id) {
  bool replacing_changed = false;
  if (auto hit = find(backup_id)) {
    if (hit->worker_failed()) {
      // Its requests got EIO; the next attach waits for the backoff.
      drop_failed_worker(hit);
    } else if (!hit->images_changed()) {
      hit->touch();
      return hit;
    } else {
      // An image was truncated, rewritten or replaced under this attach:
      // its readers answer EIO for good. Requests that already hold it
      // still get EIO; every new one gets a fresh attach of what the
      // repository holds now (validated again), with the same node ids.
      detach_if_current(hit, "image_changed");
      replacing_changed = true;
    }
  }
  auto snap = view_.snapshot();
  const BackupRecord* record = snap->find(backup_id);
  if (!record) throw Error(ENOENT, "no such backup in the catalog", backup_id);

  auto lock_ptr = attach_lock(backup_id);
  std::unique_lock attach_guard(*lock_ptr, std::defer_lock);
  if (!attach_guard.try_lock_for(options_.attach_wait)) {
    count_failure("attach_stuck");
    log::warn("attach_stuck", {{"backup", backup_id},
                               {"reason", "another attach of this backup is still running (unresponsive repository?)"}});
    throw Error(EIO, "attach still in progress after " + std::to_string(options_.attach_wait.count()) + " s",
                backup_id);
  }
  if (auto hit = find(backup_id)) {  // attached by another thread meanwhile
    hit->touch();
    return hit;
  }
  {
    std::lock_guard lock(failures_mutex_);
    auto it = failures_.find(backup_id);
    if (it != failures_.end() && std::chrono::steady_clock::now() - it->second.when < options_.failure_backoff)
      throw Error(it->second.code, it->second.message, backup_id);
  }
  make_room(backup_id);
  AttachedBackupPtr attached;
  try {
    attached = attach(*record);
  } catch (...) {
    {
      std::unique_lock lock(table_mutex_);
      --attaching_;
    }
    attach_done_.notify_all();
    throw;
  }
  attached->replaced_changed = replacing_changed;
  {
    std::unique_lock lock(table_mutex_);
    --attaching_;
    attached_[backup_id] = attached;
  }
  attach_done_.notify_all();
  return attached;
}

bool AttachManager::evict_one_idle(const std::string& for_backup) {
  AttachedBackupPtr victim;
  {
    std::unique_lock lock(table_mutex_);
    victim = least_recently_used_idle();
    if (!victim) return false;
    attached_.erase(victim->backup_id);
  }
  log::info("evict", {{"backup", victim->backup_id}, {"for", for_backup}, {"reason", "kernel device pool full"}});
  release(victim, "evict");
  victim.reset();  // the last reference: its kernel devices are released here, before the retry
  return true;
}

// Reserves a slot for one more attach (attaching_++), evicting the least
// recently used idle backup (see the header) when the table is full.
void AttachManager::make_room(const std::string& for_backup) {
  AttachedBackupPtr victim;
  {
    std::unique_lock lock(table_mutex_);
    const auto deadline = std::chrono::steady_clock::now() + options_.attach_wait;
    while (attached_.size() + attaching_ >= options_.max_mounts) {
      victim = least_recently_used_idle();
      if (victim) {
        attached_.erase(victim->backup_id);
        break;
      }
      // Slots held by attaches under way free up (or become idle) when they
      // finish: wait for them rather than failing a burst of first accesses,
      // looking again every 200 ms (a busy backup going idle wakes nobody).
      if (attaching_ == 0 || std::chrono::steady_clock::now() >= deadline) {
        count_failure("busy");
        log::warn("busy", {{"backup", for_backup},
                           {"reason", "max-mounts " + std::to_string(options_.max_mounts) +
                                          " reached and a request is in flight on every attached backup"}});
        throw Error(EBUSY, "too many attached backups in use", for_backup);
      }
      attach_done_.wait_for(lock, std::chrono::milliseconds(200));
    }
    ++attaching_;
  }
  if (victim) {
    log::info("evict", {{"backup", victim->backup_id}, {"for", for_backup}});
    release(victim, "evict");
  }
}

AttachedBackupPtr AttachManager::attach(const BackupRecord& record) {
  const auto started = steady_now_ms();
  std::string previous_failed_row;
  {
    std::lock_guard lock(failures_mutex_);
    auto it = failures_.find(record.id);
    if (it != failures_.end()) {
      previous_failed_row = it->second.mount_id;
      failures_.erase(it);
    }
  }
  std::string mount_id;
  try {
    if (!previous_failed_row.empty()) catalog_.end_mount(previous_failed_row);
    mount_id = catalog_.begin_mount(record.id, options_.mount_path, "userspace",
                                    static_cast<int64_t>(options_.idle_timeout.count()));
  } catch (const Error& e) {
    count_failure("attach_failed");
    if (options_.metrics) options_.metrics->attach_failed();
    log::error("attach_failed", {{"backup", record.id}, {"error", e.what()}});
    throw Error(EIO, std::string("catalog: ") + e.what(), record.id);
  }

  auto backup = std::make_shared<AttachedBackup>();
  backup->backup_id = record.id;
  backup->num = record.num;
  backup->mount_id = mount_id;
  std::string types;
  try {
    std::vector<DiskSpec> specs;
    for (const BackupDisk& d : record.all_disks()) specs.push_back({d.image_path, image_format_from_string(d.format)});

    std::vector<std::string> volume_errors;
    auto problem = [&](const std::string& name, const std::string& type, bool failed, const std::string& reason) {
      if (!failed) {
        log::info("volume_skipped", {{"backup", record.id}, {"volume", name}, {"type", type}, {"reason", reason}});
        return;
      }
      count_failure("volume_failed");
      log::error("volume_failed", {{"backup", record.id}, {"volume", name}, {"error", reason}});
      volume_errors.push_back(reason);
    };
    bool any_kernel = false;
    auto add_volume = [&](const std::string& name, uint64_t offset, uint64_t length, FilesystemPtr fs,
                          const std::string& backend) {
      AttachedVolume av;
      av.fs = std::move(fs);
      av.backend = backend;
      any_kernel = any_kernel || av.backend == "kernel";
      av.name = name;
      av.fs_type = av.fs->type_name();
      // A catalog failure here fails the whole attach (retried after the
      // backoff) rather than serving the backup without this volume.
      VolumeRecord row;
      row.backup_id = record.id;
      row.name = name;
      row.fs_type = av.fs_type;
      row.offset = offset;
      row.length = length;
      const JournalReport journal = av.fs->journal();
      row.journal_state = journal.state;
      row.journal_transactions = journal.transactions;
      row.journal_blocks = journal.blocks;
      row.journal_note = journal.note;
      row.backend = av.backend;
      av.id = catalog_.ensure_volume(row);
      view_.remember_volume(av.id, record.id);
      if (!types.empty()) types += ",";
      types += av.fs_type;
      backup->volumes.push_back(std::move(av));
    };

    // The kernel backend, set up at the first volume it serves; each of its
    // volumes keeps it alive (see kernel_backup.h).
    std::shared_ptr<kernel::KernelBackup> kernel_backup;
    std::optional<std::string> kernel_unavailable;
    KernelMount kernel;
    if (options_.attach_mode != "userspace")
      kernel = [&](const Volume& v, const std::string& where, bool userspace) -> FilesystemPtr {
        if (!kernel::kernel_mounts(v.type) || (options_.attach_mode != "kernel" && userspace)) return nullptr;
        if (!kernel_unavailable) kernel_unavailable = kernel::kernel_backend_unavailable();
        if (!kernel_unavailable->empty()) {
          if (!userspace)
            log::info("kernel_backend_unavailable",
                      {{"backup", record.id}, {"volume", v.name}, {"reason", *kernel_unavailable}});
          return nullptr;
        }
        if (!kernel_backup) {
          std::vector<kernel::DiskImage> images;
          for (const BackupDisk& d : record.all_disks())
            images.push_back({d.image_path, image_format_from_string(d.format),
                              std::filesystem::path(d.image_path).parent_path().string()});
          kernel::KernelOptions kopts;
          kopts.nbd = options_.nbd_devices;
          kopts.replay = options_.fs_open.replay_journal;
          const std::string backup_id = record.id;
          kopts.claim = [this, backup_id, mount_id](const std::string& device) {
            return catalog_.claim_kernel_device({device, "nbd", backup_id, mount_id, ::getpid(), 0});
          };
          kopts.release = [this](const std::string& device) { catalog_.release_kernel_device(device); };
          kernel_backup =
              std::make_shared<kernel::KernelBackup>(mount_id, record.id, std::move(images), std::move(kopts));
        }
        // A device pool that is full (every restore-pool nbd device, or
        // no loop device left) frees a device by evicting the least
        // recently used idle backup, as --max-mounts does; else EBUSY.
        for (;;) {
          try {
            return kernel_backup->mount_volume(v, where);
          } catch (const Error& e) {
            if (e.code() != EBUSY || !evict_one_idle(record.id)) throw;
          }
        }
      };

    // --isolation worker: the backup's parsers run in a sandboxed worker;
    // --attach kernel and qemu-nbd images stay here. With --attach auto a
    // volume no userspace reader reads (btrfs) is still the kernel's.
    // The caches of the readers this daemon runs for the backup (all of them
    // in process; the kernel volumes' listings next to a worker, which
    // keeps its own budget) share one budget.
    auto budget = std::make_shared<CacheBudget>(options_.fs_open.cache_budget_bytes);
    std::shared_ptr<Worker> worker;
    if (options_.isolation == "worker" && options_.attach_mode != "kernel") {
      worker = Worker::start(record.id, record.num, specs, options_.fs_open, options_.worker);
      if (!worker)
        log::warn("isolation_unavailable", {{"backup", record.id},
                                            {"reason", "an image is read by qemu-nbd (VMDK, VHDX): attached in the daemon"}});
    }
    if (worker) {
      const worker::Hello& hello = worker->hello();
      backup->worker = worker;
      backup->image_files = worker->images();
      catalog_.set_mount_image_reader(mount_id, hello.readers);
      for (const auto& w : hello.warnings) log::warn("volume_layout", {{"backup", record.id}, {"warning", w}});
      for (uint32_t i = 0; i < hello.volumes.size(); ++i) {
        const worker::HelloVolume& v = hello.volumes[i];
        add_volume(v.name, v.offset, v.length, Worker::filesystem(worker, i), "userspace");
      }
      for (const auto& p : hello.problems) {
        FilesystemPtr fs;
        if (kernel && !p.failed && p.readable) {
          Volume v;
          v.name = p.name;
          v.type = static_cast<FsType>(p.fs);
          v.disk = p.disk;
          v.offset = p.offset;
          v.length = p.length;
          try {
            fs = kernel(v, record.id + "/" + v.name, false);
          } catch (const Error& e) {
            problem(p.name, p.type, true, e.what());
            continue;
          }
        }
        if (fs) add_volume(p.name, p.offset, p.length, with_paged_listings(std::move(fs), budget), "kernel");  // as open_volumes does
        else problem(p.name, p.type, p.failed, p.reason);
      }
    } else {
      OpenedDisks disks = open_disks(specs, open_nbd_image, budget);
      for (const auto& d : disks.devices)
        if (d->reader() != "qemu-nbd") backup->images.push_back(d);
      catalog_.set_mount_image_reader(mount_id, disks.readers);
      const BackupLayout layout = discover_backup(disks.devices);
      for (const auto& w : layout.warnings) log::warn("volume_layout", {{"backup", record.id}, {"warning", w}});

      EngineOptions engine;
      engine.fs_open = options_.fs_open;
      engine.fs_open.cache_budget = budget;
      engine.label = record.id;
      engine.kernel = kernel;
      OpenedVolumes opened = open_volumes(layout, engine);

      for (const VolumeProblem& p : opened.problems)
        problem(p.layout->name, to_string(p.layout->type), p.failed, p.reason);
      for (OpenedVolume& o : opened.volumes)
        add_volume(o.layout->name, o.layout->offset, o.layout->length, std::move(o.fs), o.backend);
    }
    if (backup->volumes.empty() && !volume_errors.empty())
      throw Error(EIO, "no volume could be opened: " + volume_errors.front());
    if (any_kernel) catalog_.set_mount_attach_mode(mount_id, "kernel");
    catalog_.set_mount_status(mount_id, "mounted", types);
  } catch (const std::exception& e) {
    const Error* err = dynamic_cast<const Error*>(&e);
    const int code = (err && err->code() == EBUSY) ? EBUSY : EIO;
    count_failure("attach_failed");
    if (options_.metrics) options_.metrics->attach_failed();
    log::error("attach_failed", {{"backup", record.id}, {"image", record.image_path}, {"error", e.what()}});
    try {
      catalog_.set_mount_status(mount_id, "failed", types, e.what());
    } catch (const std::exception& e2) {
      count_failure("catalog_error");
      log::error("catalog_error", {{"backup", record.id}, {"error", e2.what()}});
    }
    std::lock_guard lock(failures_mutex_);
    failures_[record.id] = Failure{std::chrono::steady_clock::now(), code, e.what(), mount_id};
    throw Error(code, e.what(), record.id);
  }
  backup->touch();
  if (options_.metrics) options_.metrics->attached(static_cast<double>(steady_now_ms() - started) / 1000.0);
  log::info("attach", {{"backup", record.id},
                       {"volumes", std::to_string(backup->volumes.size())},
                       {"types", types},
                       {"mode", options_.attach_mode},
                       {"ms", std::to_string(steady_now_ms() - started)}});
  return backup;
}

void AttachManager::release(const AttachedBackupPtr& backup, std::string_view reason) {
  backup->detached.store(true, std::memory_order_release);
  // An image that changed while nothing read it must still mark this
  // attach: the kernel may keep pages read through it, and the next attach
  // serves the new version under the same node ids (fuse/node_files.h).
  backup->images_changed(/*check_now=*/true);
  try {
    catalog_.set_mount_status(backup->mount_id, "unmounting");
    catalog_.end_mount(backup->mount_id);
  } catch (const std::exception& e) {
    count_failure("catalog_error");
    log::error("catalog_error", {{"backup", backup->backup_id}, {"error", e.what()}});
  }
  if (options_.metrics) options_.metrics->detached(reason);
  log::info("detach", {{"backup", backup->backup_id}, {"reason", std::string(reason)}});
  // The readers close when the last in-flight request drops its reference.
}

void AttachManager::detach(const std::string& backup_id, std::string_view reason) {
  AttachedBackupPtr victim;
  {
    std::unique_lock lock(table_mutex_);
    auto it = attached_.find(backup_id);
    if (it == attached_.end()) return;
    victim = it->second;
    attached_.erase(it);
  }
  release(victim, reason);
}

void AttachManager::detach_requested() {
  for (const std::string& id : catalog_.take_detach_requests()) detach(id, "requested");
}

void AttachManager::detach_if_current(const AttachedBackupPtr& backup, std::string_view reason) {
  {
    std::unique_lock lock(table_mutex_);
    auto it = attached_.find(backup->backup_id);
    if (it == attached_.end() || it->second != backup) return;
    attached_.erase(it);
  }
  release(backup, reason);
}

bool AttachManager::drop_failed_worker(const AttachedBackupPtr& backup) {
  if (!backup->worker_failed()) return false;
  {
    std::lock_guard lock(failures_mutex_);
    auto& f = failures_[backup->backup_id];
    const auto when = backup->worker->failed_at();
    if (f.when < when) f = Failure{when, EIO, "worker failed (" + backup->worker->failure() + ")", ""};
  }
  count_failure("worker_failed");
  detach_if_current(backup, "worker_failed");
  return true;
}

void AttachManager::detach_idle() {
  std::vector<AttachedBackupPtr> failed;
  {
    std::shared_lock lock(table_mutex_);
    for (const auto& [id, b] : attached_)
      if (b->worker_failed()) failed.push_back(b);
  }
  for (const auto& b : failed) drop_failed_worker(b);
  const int64_t now = steady_now_ms();
  const int64_t limit = static_cast<int64_t>(options_.idle_timeout.count()) * 1000;
  std::vector<AttachedBackupPtr> idle;
  {
    std::unique_lock lock(table_mutex_);
    for (auto it = attached_.begin(); it != attached_.end();) {
      const auto& b = it->second;
      if (b.use_count() == 1 && now - b->last_access_ms.load() >= limit) {
        idle.push_back(b);
        it = attached_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& b : idle) release(b, "idle");
}

void AttachManager::flush_access_times() {
  std::vector<std::pair<std::string, int64_t>> batch;
  const int64_t now_steady = steady_now_ms();
  const int64_t now_wall = wall_now();
  {
    std::shared_lock lock(table_mutex_);
    for (const auto& [id, b] : attached_) {
      const int64_t last = b->last_access_ms.load();
      if (last == b->last_flushed_ms.load()) continue;
      b->last_flushed_ms.store(last);
      batch.emplace_back(b->mount_id, now_wall - (now_steady - last) / 1000);
    }
  }
  if (batch.empty()) return;
  try {
    catalog_.touch_mounts(batch, static_cast<int64_t>(options_.idle_timeout.count()));
  } catch (const std::exception& e) {
    count_failure("catalog_error");
    log::error("catalog_error", {{"what", "flush last_accessed_at"}, {"error", e.what()}});
  }
}

void AttachManager::detach_all(std::string_view reason) {
  std::vector<AttachedBackupPtr> all;
  {
    std::unique_lock lock(table_mutex_);
    for (auto& [id, b] : attached_) all.push_back(b);
    attached_.clear();
  }
  for (const auto& b : all) release(b, reason);
  // The rows of failed attaches end with the run too.
  std::lock_guard lock(failures_mutex_);
  for (const auto& [id, failure] : failures_) {
    try {
      catalog_.end_mount(failure.mount_id);
    } catch (const std::exception& e) {
      count_failure("catalog_error");
      log::error("catalog_error", {{"backup", id}, {"error", e.what()}});
    }
  }
  failures_.clear();
}

}  // namespace sendense
