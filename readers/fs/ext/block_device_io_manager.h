// A libext2fs io_manager over a BlockDevice (private to readers/fs/ext/).
//
// libext2fs opens its device by name through an io_manager. The name we pass
// to ext2fs_open2 is a key into a process-wide registry ("sendense-bdev:<n>"),
// so no temporary file or loop device is ever involved. The registration only
// has to live while ext2fs_open2 runs: the channel keeps its own reference to
// the device afterwards.
//
// Read-only by construction: opening with IO_FLAG_RW and every write entry
// point (write_blk, write_blk64, write_byte, discard, zeroout) fail with
// EROFS. Reads past the end of the device are zero-filled and answered with
// EXT2_ET_SHORT_READ, like unix_io does.
//
// Threading: a channel is used by one ext2_filsys, whose calls the caller
// serialises (libext2fs is not thread-safe); the registry is locked.
#pragma once

#include <ext2fs/ext2fs.h>  // ext2_io.h is not self-contained

#include <cstdint>
#include <string>

#include "readers/block/block_device.h"

namespace sendense::ext {

// The io_manager; valid for the life of the process.
io_manager block_device_io_manager();

// Makes `device` reachable by name() for the io_manager's open() until
// destroyed.
class DeviceRegistration {
 public:
  explicit DeviceRegistration(BlockDevicePtr device);
  ~DeviceRegistration();
  DeviceRegistration(const DeviceRegistration&) = delete;
  DeviceRegistration& operator=(const DeviceRegistration&) = delete;

  const std::string& name() const { return name_; }

 private:
  uint64_t key_;
  std::string name_;
};

}  // namespace sendense::ext
