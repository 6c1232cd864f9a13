// Loop devices of the kernel backend (LOOP_CONFIGURE). One device per volume:
// partitions are parsed in userspace, so the kernel gets a window (offset,
// size) over the disk and never probes the guest's partition table.
//
// Every device is tagged in lo_file_name with "sendense-restore:<mount-id>",
// so a later run can find what a crashed one left behind, and has
// LO_FLAGS_AUTOCLEAR: it detaches itself when its last user (the mount)
// goes away.
#pragma once

#include <cstdint>
#include <string>

namespace sendense::kernel {

inline constexpr const char* kLoopTagPrefix = "sendense-restore:";

class LoopDevice {
 public:
  // Binds a free loop device to [offset, offset + size) of `file`.
  // `read_only`: the device refuses writes. Throws Error.
  LoopDevice(const std::string& file, uint64_t offset, uint64_t size, bool read_only, const std::string& tag);
  ~LoopDevice();  // closes our descriptor: autoclear detaches once unused
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  const std::string& path() const { return path_; }
  // Detaches now (LOOP_CLR_FD); with a mount still on it the kernel defers
  // it to the last close. Never throws; logs.
  void detach();

 private:
  std::string path_;
  int fd_ = -1;
};

// Detaches every loop device whose tag starts with `tag_prefix`; returns how
// many. Never throws.
int release_tagged_loops(const std::string& tag_prefix);

}  // namespace sendense::kernel
