// The nbd provider of the kernel backend: `qemu-nbd --read-only --connect`
// of one volume (a raw window over the pinned image chain, so the kernel
// never scans the guest's partition table) to a device of the restore pool
// (/dev/nbd0-7 by default; nbd8+ stay free for backup exports).
//
// A device is taken only when (1) the kernel shows it unused
// (/sys/block/nbdN/pid absent) and (2) `claim` records it (a UNIQUE catalog
// row: two daemons, or a dead run not yet reconciled, never share one). A
// device the kernel shows in use with no row of ours is never touched.
// The device is read-only: journals are not replayed (noload/norecovery).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "readers/block/block_device.h"

namespace sendense {
class ChildProcess;
}

namespace sendense::kernel {

struct NbdRange {
  int first = 0;
  int last = 7;
};

// "0-7" or "3"; throws Error(EINVAL).
NbdRange parse_nbd_range(const std::string& text);

// True if the nbd module is loaded (/sys/block/nbd0 exists).
bool nbd_available();

// True if the kernel shows /dev/nbdN connected.
bool nbd_in_use(int n);

// Start-up reconciliation: `qemu-nbd --disconnect` of a device a dead run's
// row holds (its helper died with it). Logs; never throws.
void disconnect_stale_nbd(const std::string& device);

class NbdDevice {
 public:
  using Claim = std::function<bool(const std::string& device)>;
  using Release = std::function<void(const std::string& device)>;
  // Connects [offset, offset + size) of the chain. Throws Error(EBUSY) when
  // every device of `range` is in use or claimed, ETIMEDOUT when the device
  // has no size after 30 s, EIO when qemu-nbd fails (its output included).
  NbdDevice(const std::vector<ChainLink>& chain, uint64_t offset, uint64_t size, NbdRange range,
            const std::string& pid_folder, Claim claim, Release release);
  ~NbdDevice();  // qemu-nbd --disconnect, stop the helper, release the claim; logs, never throws
  NbdDevice(const NbdDevice&) = delete;
  NbdDevice& operator=(const NbdDevice&) = delete;

  const std::string& path() const { return path_; }
  pid_t helper_pid() const;

 private:
  std::string path_;
  std::string log_path_;
  std::unique_ptr<ChildProcess> helper_;
  Release release_;
};

}  // namespace sendense::kernel
