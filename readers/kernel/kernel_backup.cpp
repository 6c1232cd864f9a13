#include "readers/kernel/kernel_backup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "readers/block/child_process.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/fs/passthrough/passthrough_filesystem.h"
#include "readers/kernel/image_export.h"
#include "readers/kernel/loop_device.h"
#include "readers/kernel/staging.h"

namespace sendense::kernel {

namespace {

// The kernel's name of a filesystem type we serve, "" if we do not.
std::string kernel_fs_name(FsType type) {
  switch (type) {
    case FsType::ext2:
    case FsType::ext3:
    case FsType::ext4:
      return "ext4";  // the ext4 driver mounts all three
    case FsType::xfs:
      return "xfs";
    case FsType::btrfs:
      return "btrfs";
    default:
      return "";
  }
}

// Mount options beyond ro,nosuid,nodev,noexec. With `replay` the device is
// a throwaway overlay and journals are replayed into it; without, nothing is
// replayed (--no-replay, or a read-only device). XFS needs nouuid to attach
// two backups of one volume at once.
std::string mount_options(FsType type, bool replay, bool ext_has_journal) {
  if (type == FsType::xfs) return replay ? "nouuid" : "norecovery,nouuid";
  if (type == FsType::btrfs) return replay ? "" : "rescue=nologreplay";
  return replay || !ext_has_journal ? "" : "noload";
}

// What the kernel will do with an ext journal: the superblock's
// needs_recovery flag, read through the export before mounting.
JournalReport ext_journal_report(const std::string& export_path, uint64_t offset, const std::string& where) {
  JournalReport r;
  unsigned char sb[1024];
  const int fd = ::open(export_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return r;
  const ssize_t n = ::pread(fd, sb, sizeof sb, static_cast<off_t>(offset + 1024));
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof sb) || sb[0x38] != 0x53 || sb[0x39] != 0xEF) return r;
  auto le32 = [&](size_t at) {
    return uint32_t{sb[at]} | uint32_t{sb[at + 1]} << 8 | uint32_t{sb[at + 2]} << 16 | uint32_t{sb[at + 3]} << 24;
  };
  const bool has_journal = le32(0x5C) & 0x4;
  const bool needs_recovery = le32(0x60) & 0x4;
  if (!has_journal) return r;
  if (needs_recovery) {
    r.state = "replayed";
    r.note = "by the kernel into a throwaway overlay";
    log::debug("journal_needs_recovery", {{"volume", where}});
  } else {
    r.state = "clean";
  }
  return r;
}

}  // namespace

std::string kernel_backend_unavailable() {
  if (::geteuid() != 0) return "not root";
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) return "no /dev/loop-control";
  if (find_program("qemu-storage-daemon").empty()) return "qemu-storage-daemon not installed";
  if (find_program("qemu-img").empty()) return "qemu-img not installed";
  return "";
}

bool kernel_mounts(FsType type) {
  const std::string name = kernel_fs_name(type);
  if (name.empty()) return false;
  std::ifstream in("/proc/filesystems");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string a, b;
    fields >> a >> b;
    if (a == name || b == name) return true;
  }
  return false;
}

KernelBackup::KernelBackup(std::string mount_id, std::string backup_id, std::vector<DiskImage> disks,
                           KernelOptions options)
    : mount_id_(std::move(mount_id)), backup_id_(std::move(backup_id)), disks_(std::move(disks)),
      options_(std::move(options)) {
  const std::string base = staging_base();
  make_private_dir(base);
  folder_ = base + "/" + mount_id_;
  make_private_dir(folder_);
}

ImageExport& KernelBackup::export_of(uint32_t disk) {
  auto it = exports_.find(disk);
  if (it != exports_.end()) return *it->second;
  if (disk >= disks_.size()) throw Error(EINVAL, "no disk " + std::to_string(disk), backup_id_);
  const DiskImage& d = disks_[disk];
  auto e = std::make_unique<ImageExport>(d.path, d.format, d.confine_root, folder_, "disk" + std::to_string(disk));
  return *exports_.emplace(disk, std::move(e)).first->second;
}

FilesystemPtr KernelBackup::mount_volume(const Volume& v, const std::string& where) {
  const std::string fs = kernel_fs_name(v.type);
  if (fs.empty()) throw Error(EOPNOTSUPP, std::string("the kernel backend does not mount ") + to_string(v.type), where);
  if (v.name.rfind("lvm-", 0) == 0 || v.name.find('/') != std::string::npos)
    throw Error(EOPNOTSUPP, "the kernel backend does not mount LVM logical volumes", where);
  std::lock_guard lock(mutex_);
  if (options_.nbd && nbd_available()) return mount_volume_nbd(v, fs, where);
  ImageExport& exp = export_of(v.disk);
  if (v.length == 0 || v.offset > exp.size() || v.length > exp.size() - v.offset)
    throw Error(EIO, "volume lies outside its disk", where);
  JournalReport journal;
  if (fs == "ext4") journal = ext_journal_report(exp.path(), v.offset, where);
  if (!options_.replay && journal.state == "replayed") {
    journal.state = "skipped";
    journal.note = "--no-replay: shown as stored";
  }

  Mounted m;
  m.dir = folder_ + "/" + v.name;
  make_private_dir(m.dir);
  try {
    m.loop = std::make_unique<LoopDevice>(exp.path(), v.offset, v.length, /*read_only=*/false, mount_id_);
    mount_readonly(m.loop->path(), m.dir, fs, mount_options(v.type, options_.replay, journal.state != "none"));
  } catch (...) {
    m.loop.reset();
    ::rmdir(m.dir.c_str());
    throw;
  }
  log::info("kernel_mount", {{"volume", where}, {"device", m.loop->path()}, {"dir", m.dir}, {"type", fs}});
  if (journal.state == "replayed") log::info("journal_replayed", {{"volume", where}, {"how", journal.note}});
  m.loop.reset();  // the mount holds the device now; autoclear frees it at unmount
  mounts_.push_back(std::move(m));
  return open_passthrough_filesystem(mounts_.back().dir, to_string(v.type), where, journal, shared_from_this());
}

// The nbd provider: a read-only device per volume, no overlay, so nothing is
// replayed: noload (ext3/4), norecovery (XFS), nologreplay (btrfs).
FilesystemPtr KernelBackup::mount_volume_nbd(const Volume& v, const std::string& fs, const std::string& where) {
  if (v.disk >= disks_.size()) throw Error(EINVAL, "no disk " + std::to_string(v.disk), where);
  const DiskImage& d = disks_[v.disk];
  const std::vector<ChainLink> chain = read_image_chain(d.path, d.format, d.confine_root);
  Mounted m;
  m.dir = folder_ + "/" + v.name;
  make_private_dir(m.dir);
  JournalReport journal;
  try {
    m.nbd = std::make_unique<NbdDevice>(chain, v.offset, v.length, *options_.nbd, folder_, options_.claim,
                                        options_.release);
    if (fs == "ext4") {
      journal = ext_journal_report(m.nbd->path(), 0, where);
      if (journal.state == "replayed") {
        journal.state = "skipped";
        journal.note = "read-only nbd device, no overlay: view as of the last checkpoint (may be stale)";
        log::warn("journal_not_replayed", {{"volume", where}, {"reason", journal.note}});
      }
    }
    mount_readonly(m.nbd->path(), m.dir, fs, mount_options(v.type, false, journal.state != "none"));
  } catch (...) {
    m.nbd.reset();
    ::rmdir(m.dir.c_str());
    throw;
  }
  log::info("kernel_mount", {{"volume", where}, {"device", m.nbd->path()}, {"dir", m.dir}, {"type", fs}});
  mounts_.push_back(std::move(m));
  return open_passthrough_filesystem(mounts_.back().dir, to_string(v.type), where, journal, shared_from_this());
}

KernelBackup::~KernelBackup() {
  for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) {
    if (unmount(it->dir)) log::info("kernel_unmount", {{"backup", backup_id_}, {"dir", it->dir}});
    it->nbd.reset();  // qemu-nbd --disconnect, helper stopped, row released
    if (::rmdir(it->dir.c_str()) != 0 && errno != ENOENT)
      log::error("rmdir_failed", {{"dir", it->dir}, {"error", std::strerror(errno)}});
  }
  exports_.clear();  // stops qemu-storage-daemon, removes export and overlay
  remove_staging_dir(folder_);
  log::info("kernel_detach", {{"backup", backup_id_}, {"folder", folder_}});
}

}  // namespace sendense::kernel
