#include "readers/kernel/loop_device.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense::kernel {

namespace {
constexpr int kConfigureAttempts = 16;  // another process can take the free device between the two calls
}

LoopDevice::LoopDevice(const std::string& file, uint64_t offset, uint64_t size, bool read_only,
                       const std::string& tag) {
  const int backing = ::open(file.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (backing < 0) throw sys_error("open for a loop device", file);
  const int control = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (control < 0) {
    const Error e = sys_error("open /dev/loop-control", file);
    ::close(backing);
    throw e;
  }
  struct loop_config config {};
  config.fd = static_cast<__u32>(backing);
  config.info.lo_offset = offset;
  config.info.lo_sizelimit = size;
  config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (read_only ? LO_FLAGS_READ_ONLY : 0);
  std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), (kLoopTagPrefix + tag).c_str(),
               LO_NAME_SIZE - 1);
  int last_errno = 0;
  for (int attempt = 0; attempt < kConfigureAttempts && fd_ < 0; ++attempt) {
    const int n = ::ioctl(control, LOOP_CTL_GET_FREE);
    if (n < 0) {
      last_errno = errno;
      break;
    }
    const std::string dev = "/dev/loop" + std::to_string(n);
    const int fd = ::open(dev.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    if (::ioctl(fd, LOOP_CONFIGURE, &config) == 0) {
      fd_ = fd;
      path_ = dev;
      break;
    }
    last_errno = errno;
    ::close(fd);
    if (last_errno != EBUSY) break;
  }
  ::close(control);
  ::close(backing);  // the loop device holds its own reference
  if (fd_ < 0) throw Error(last_errno ? last_errno : EBUSY, std::string("no loop device: ") + std::strerror(last_errno), file);
}

LoopDevice::~LoopDevice() {
  if (fd_ >= 0) ::close(fd_);
}

void LoopDevice::detach() {
  if (fd_ < 0) return;
  if (::ioctl(fd_, LOOP_CLR_FD, 0) != 0 && errno != ENXIO)
    log::warn("loop_detach_failed", {{"device", path_}, {"error", std::strerror(errno)}});
  ::close(fd_);
  fd_ = -1;
}

int release_tagged_loops(const std::string& tag_prefix) {
  int released = 0;
  DIR* d = ::opendir("/sys/block");
  if (d == nullptr) return 0;
  while (const dirent* e = ::readdir(d)) {
    if (std::strncmp(e->d_name, "loop", 4) != 0) continue;
    const std::string dev = std::string("/dev/") + e->d_name;
    const int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct loop_info64 info {};
    if (::ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
      const std::string name(reinterpret_cast<const char*>(info.lo_file_name),
                             strnlen(reinterpret_cast<const char*>(info.lo_file_name), LO_NAME_SIZE));
      if (name.rfind(tag_prefix, 0) == 0) {
        if (::ioctl(fd, LOOP_CLR_FD, 0) == 0) {
          ++released;
          log::info("reconciled_loop", {{"device", dev}, {"tag", name}});
        } else {
          log::warn("reconcile_loop_failed", {{"device", dev}, {"tag", name}, {"error", std::strerror(errno)}});
        }
      }
    }
    ::close(fd);
  }
  ::closedir(d);
  return released;
}

}  // namespace sendense::kernel
