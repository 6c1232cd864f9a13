// A raw disk image: a plain file read with pread, opened O_RDONLY.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "readers/block/block_device.h"
#include "readers/common/error.h"

#include <cstring>

namespace sendense {

namespace {

class RawImage final : public BlockDevice {
 public:
  RawImage(int fd, uint64_t size, std::string path) : fd_(fd), size_(size), path_(std::move(path)) {}
  ~RawImage() override { ::close(fd_); }
  RawImage(const RawImage&) = delete;
  RawImage& operator=(const RawImage&) = delete;

  uint64_t size() const override { return size_; }
  std::string describe() const override { return path_; }
  std::string reader() const override { return "raw"; }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    size_t done = 0;
    while (done < buf.size()) {
      ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        int saved = errno;
        throw Error(EIO, "read at offset " + std::to_string(offset + done) + " failed: " + std::strerror(saved), path_);
      }
      if (n == 0)  // the file shrank under us (a repository being rewritten)
        throw Error(EIO, "unexpected end of file at offset " + std::to_string(offset + done), path_);
      done += static_cast<size_t>(n);
    }
  }

 private:
  int fd_;
  uint64_t size_;
  std::string path_;
};

}  // namespace

BlockDevicePtr open_raw_image(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw sys_error("cannot open image", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Error e = sys_error("cannot stat image", path);
    ::close(fd);
    throw e;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(EIO, "not a regular file", path);
  }
  return std::make_shared<RawImage>(fd, static_cast<uint64_t>(st.st_size), path);
}

}  // namespace sendense
