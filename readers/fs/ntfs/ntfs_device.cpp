#include "readers/fs/ntfs/ntfs_device.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <limits>

#include "readers/common/error.h"

// libntfs-3g last: its types.h defines min() and max() macros. Its headers
// have no C++ guards.
extern "C" {
#include <ntfs-3g/types.h>
#include <ntfs-3g/device.h>
}
#undef min
#undef max

namespace sendense::ntfs {

namespace {

}  // namespace

// What d_private points at. The library is serialised by the volume's
// mutex, so `position` needs no lock of its own.
struct BlockDeviceNtfsDevice::State {
  BlockDevicePtr device;
  int64_t position = 0;
};

namespace {

using Private = BlockDeviceNtfsDevice::State;

Private& priv(ntfs_device* dev) { return *static_cast<Private*>(dev->d_private); }

int dev_open(ntfs_device* dev, int flags) {
  if ((flags & O_ACCMODE) != O_RDONLY) {
    errno = EROFS;
    return -1;
  }
  NDevSetOpen(dev);
  NDevSetReadOnly(dev);
  return 0;
}

int dev_close(ntfs_device* dev) {
  NDevClearOpen(dev);
  return 0;
}

s64 dev_seek(ntfs_device* dev, s64 offset, int whence) {
  Private& p = priv(dev);
  const int64_t size = static_cast<int64_t>(p.device->size());
  int64_t base = 0;
  switch (whence) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = p.position; break;
    case SEEK_END: base = size; break;
    default: errno = EINVAL; return -1;
  }
  if ((offset > 0 && base > std::numeric_limits<int64_t>::max() - offset) || base + offset < 0) {
    errno = EINVAL;
    return -1;
  }
  p.position = base + offset;
  return p.position;
}

// A short count at the end of the device, like pread(2); -1/EIO when the
// image cannot be read.
s64 dev_pread(ntfs_device* dev, void* buf, s64 count, s64 offset) {
  Private& p = priv(dev);
  if (count < 0 || offset < 0) {
    errno = EINVAL;
    return -1;
  }
  const uint64_t size = p.device->size();
  if (static_cast<uint64_t>(offset) >= size) return 0;
  const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(count), size - static_cast<uint64_t>(offset));
  try {
    p.device->read_at(static_cast<uint64_t>(offset), std::span(static_cast<std::byte*>(buf), static_cast<size_t>(n)));
  } catch (const Error& e) {
    errno = e.code() != 0 ? e.code() : EIO;
    return -1;
  } catch (const std::bad_alloc&) {
    errno = ENOMEM;
    return -1;
  } catch (...) {
    errno = EIO;
    return -1;
  }
  return static_cast<s64>(n);
}

s64 dev_read(ntfs_device* dev, void* buf, s64 count) {
  const s64 n = dev_pread(dev, buf, count, priv(dev).position);
  if (n > 0) priv(dev).position += n;
  return n;
}

s64 dev_write(ntfs_device*, const void*, s64) {
  errno = EROFS;
  return -1;
}

s64 dev_pwrite(ntfs_device*, const void*, s64, s64) {
  errno = EROFS;
  return -1;
}

int dev_sync(ntfs_device*) { return 0; }  // nothing is ever written

int dev_stat(ntfs_device* dev, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_mode = S_IFREG | 0444;  // a file: the library then takes st_size as the device size
  st->st_size = static_cast<off_t>(priv(dev).device->size());
  st->st_blksize = 4096;
  return 0;
}

int dev_ioctl(ntfs_device*, unsigned long, void*) {
  errno = ENOTTY;  // no block-device ioctls: sizes come from stat
  return -1;
}

ntfs_device_operations kOperations = {
    dev_open, dev_close, dev_seek, dev_read, dev_write, dev_pread, dev_pwrite, dev_sync, dev_stat, dev_ioctl,
};

}  // namespace

BlockDeviceNtfsDevice::BlockDeviceNtfsDevice(BlockDevicePtr device, const std::string& name)
    : state_(std::make_unique<State>()) {
  state_->device = std::move(device);
  // The library keeps its own copy of the name.
  dev_ = ntfs_device_alloc(name.c_str(), 0, &kOperations, state_.get());
  if (dev_ == nullptr) throw Error(ENOMEM, "cannot allocate an ntfs device", name);
}

BlockDeviceNtfsDevice::~BlockDeviceNtfsDevice() {
  if (!owned_ || dev_ == nullptr) return;
  if (NDevOpen(dev_)) dev_close(dev_);
  ntfs_device_free(dev_);
}

}  // namespace sendense::ntfs
