// The kernel backend for one attached backup: its disks exported by
// qemu-storage-daemon (image_export.h), one loop device and one staging
// mount per volume, and a pass-through Filesystem over each mount. Every
// volume's Filesystem keeps the KernelBackup alive; the last one gone tears
// it all down (unmount, loop, qemu, folders), each step logged and none
// skipped because an earlier one failed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/fs/filesystem.h"
#include "readers/kernel/nbd_device.h"
#include "readers/volume/volume.h"

namespace sendense::kernel {

class ImageExport;
class LoopDevice;
class NbdDevice;

// Why the host cannot run the kernel backend ("" if it can): root, loop
// devices, qemu-storage-daemon.
std::string kernel_backend_unavailable();

// True if the running kernel mounts `type` (listed in /proc/filesystems)
// and the backend serves it (ext2/3/4, XFS, btrfs).
bool kernel_mounts(FsType type);

// How the backend gets block devices: by default qemu-storage-daemon +
// loop devices (journals replayed into a throwaway overlay); with `nbd` set
// and the nbd module loaded, qemu-nbd on the restore pool (read-only device:
// journals not replayed, noload/norecovery). `claim`/`release` record the
// nbd devices held (the catalog's kernel_devices rows).
struct KernelOptions {
  bool replay = true;  // false (--no-replay): noload/norecovery even over an overlay
  std::optional<NbdRange> nbd;
  std::function<bool(const std::string& device)> claim;
  std::function<void(const std::string& device)> release;
};

struct DiskImage {
  std::string path;
  ImageFormat format = ImageFormat::raw;
  std::string confine_root;
};

class KernelBackup : public std::enable_shared_from_this<KernelBackup> {
 public:
  KernelBackup(std::string mount_id, std::string backup_id, std::vector<DiskImage> disks,
               KernelOptions options = {});
  ~KernelBackup();

  // Mounts volume `v` (a partition or whole disk of disk v.disk; not an LV)
  // and returns a pass-through Filesystem over it. Throws Error.
  FilesystemPtr mount_volume(const Volume& v, const std::string& where);

 private:
  struct Mounted {
    std::string dir;
    std::unique_ptr<LoopDevice> loop;
    std::unique_ptr<NbdDevice> nbd;
  };
  ImageExport& export_of(uint32_t disk);
  FilesystemPtr mount_volume_nbd(const Volume& v, const std::string& fs, const std::string& where);

  std::string mount_id_;
  std::string backup_id_;
  std::vector<DiskImage> disks_;
  KernelOptions options_;
  std::string folder_;
  std::mutex mutex_;
  std::map<uint32_t, std::unique_ptr<ImageExport>> exports_;
  std::vector<Mounted> mounts_;
};

}  // namespace sendense::kernel
