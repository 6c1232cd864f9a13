// libntfs-3g reads its volume through a `struct ntfs_device`; this one is
// backed by a BlockDevice (no file, no loop device). Read-only: every write
// entry point fails with EROFS, sync does nothing, opening for writing fails.
#pragma once

#include <memory>
#include <string>

#include "readers/block/block_device.h"

struct ntfs_device;

namespace sendense::ntfs {

// Owns the adapter's state for the lifetime of the volume. The ntfs_device
// itself belongs to the library once mounted (ntfs_umount frees it): call
// mounted() after a successful ntfs_device_mount. Destroy this after the
// volume is unmounted (declare it before the volume handle).
class BlockDeviceNtfsDevice {
 public:
  BlockDeviceNtfsDevice(BlockDevicePtr device, const std::string& name);
  ~BlockDeviceNtfsDevice();
  BlockDeviceNtfsDevice(const BlockDeviceNtfsDevice&) = delete;
  BlockDeviceNtfsDevice& operator=(const BlockDeviceNtfsDevice&) = delete;

  ntfs_device* get() const { return dev_; }
  void mounted() { owned_ = false; }

  struct State;  // the adapter's d_private (defined in the .cpp)

 private:
  std::unique_ptr<State> state_;
  ntfs_device* dev_ = nullptr;
  bool owned_ = true;
};

}  // namespace sendense::ntfs
