// The engine: opening one backup, from its disk images to its filesystems
// (images and their backing chains -> partition tables and LVM -> one
// reader per volume). The daemon's attach, `inspect` and (next) the
// sandboxed worker all open a backup through here, so what a backup shows
// cannot depend on who opened it.
//
// Two steps, because the daemon records which readers serve the images
// before it looks inside them, and a caller may stop after the layout:
//   open_disks()   images -> block devices (throws Error naming the image)
//   open_volumes() layout -> filesystems; one damaged volume never fails
//                  the others: it is reported in `problems`.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/fs/filesystem.h"
#include "readers/volume/volume.h"

namespace sendense {

// One disk of a backup: its top image; backing files are confined to the
// image's own folder.
struct DiskSpec {
  std::string image_path;
  ImageFormat format = ImageFormat::raw;
};

struct OpenedDisks {
  std::vector<BlockDevicePtr> devices;  // disk order
  std::string readers;                  // BlockDevice::reader() of each, comma-separated: "qcow2,raw"
};

// Throws Error naming the image that failed. `qemu`, `budget`: see
// open_image (the budget is the one the backup's volumes get through
// EngineOptions::fs_open.cache_budget).
OpenedDisks open_disks(const std::vector<DiskSpec>& disks, QemuOpener qemu, const CacheBudgetPtr& budget = nullptr);

struct OpenedVolume {
  const Volume* layout = nullptr;  // its entry in the BackupLayout given to open_volumes
  FilesystemPtr fs;
  std::string backend;             // "userspace" or "kernel"
};

// A volume of the layout that is not served.
struct VolumeProblem {
  const Volume* layout = nullptr;
  bool failed = false;             // true: a reader failed on it; false: none was tried (no reader, no device)
  std::string reason;
};

struct OpenedVolumes {
  std::vector<OpenedVolume> volumes;    // layout order
  std::vector<VolumeProblem> problems;  // layout order
};

// Mounts a volume with the kernel backend, or returns nullptr when the
// kernel is not to serve it (the policy is the caller's: --attach, device
// pools). `userspace` says whether a userspace reader could serve it
// instead; an Error thrown for such a volume falls back to that reader.
using KernelMount = std::function<FilesystemPtr(const Volume& v, const std::string& where, bool userspace)>;

struct EngineOptions {
  FsOpenOptions fs_open;
  KernelMount kernel;   // empty: userspace readers only
  std::string label;    // names the backup in errors and log lines ("backup-x"; inspect: the image path)
};

// Opens every volume of `layout` that has a reader (or that `kernel`
// mounts). The layout must outlive the result (OpenedVolume points into it).
OpenedVolumes open_volumes(const BackupLayout& layout, const EngineOptions& options);

}  // namespace sendense
