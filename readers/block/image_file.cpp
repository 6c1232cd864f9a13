#include "readers/block/image_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace {

bool same_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

}  // namespace

ImageFile::ImageFile(UniqueFd fd, const struct stat& identity, std::string display)
    : fd_(std::move(fd)), identity_(identity), display_(std::move(display)) {}

ImageFilePtr ImageFile::open(const std::string& path, const std::string& display) {
  // O_PATH opens nothing: no FIFO rendezvous, no device open routine.
  UniqueFd probe(::open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!probe) throw sys_error("cannot open image", display);
  struct stat probed {};
  if (::fstat(probe.get(), &probed) != 0) throw sys_error("cannot stat image", display);
  if (!S_ISREG(probed.st_mode)) throw Error(EIO, "not a regular file", display);

  // The real open goes through the O_PATH descriptor, so it is the inode
  // just checked even if the name was swapped meanwhile. O_NONBLOCK keeps
  // even that open from waiting, whatever the file turned into.
  const std::string self = "/proc/self/fd/" + std::to_string(probe.get());
  UniqueFd fd(::open(self.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd && errno == ENOENT) {  // no /proc: open by name, then prove it is the same inode
    fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW));
  }
  if (!fd) throw sys_error("cannot open image", display);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw sys_error("cannot stat image", display);
  if (!S_ISREG(st.st_mode) || st.st_dev != probed.st_dev || st.st_ino != probed.st_ino)
    throw Error(EIO, "not a regular file (the name changed while it was opened)", display);
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return std::make_shared<const ImageFile>(std::move(fd), st, display);
}

void ImageFile::fail_changed(const std::string& how) const {
  if (!changed_.exchange(true))
    log::error("image_changed", {{"image", display_}, {"change", how},
                                 {"action", "EIO until the backup is attached again"}});
  throw Error(EIO, "image file changed while attached (" + how + "): reads refused until it is attached again",
              display_);
}

void ImageFile::check_unchanged() const {
  if (changed_.load(std::memory_order_relaxed)) fail_changed("seen before");
  struct stat now {};
  if (::fstat(fd_.get(), &now) != 0) throw sys_error("cannot stat image", display_);
  if (now.st_nlink == 0 && identity_.st_nlink != 0) fail_changed("replaced or removed: the name now holds another file");
  if (now.st_size != identity_.st_size)
    fail_changed("size " + std::to_string(identity_.st_size) + " -> " + std::to_string(now.st_size) + " bytes");
  if (!same_time(now.st_ctim, identity_.st_ctim) || !same_time(now.st_mtim, identity_.st_mtim))
    fail_changed("written in place");
}

size_t ImageFile::read_some(void* buf, size_t len, uint64_t offset, const char* what) const {
  auto* out = static_cast<unsigned char*>(buf);
  size_t done = 0;
  // Never past the size the identity holds: bytes a writer appended are
  // not part of the image we opened.
  const uint64_t limit = offset >= size() ? 0 : std::min<uint64_t>(len, size() - offset);
  while (done < limit) {
    const ssize_t n = ::pread(fd_.get(), out + done, limit - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int saved = n < 0 ? errno : 0;
      check_unchanged();  // a truncation explains a short read: say so
      if (saved != 0)
        throw Error(EIO, std::string("cannot read ") + what + " at file offset " + std::to_string(offset + done) +
                             ": " + std::strerror(saved), display_);
      throw Error(EIO, std::string("unexpected end of file reading ") + what + " at file offset " +
                           std::to_string(offset + done), display_);
    }
    done += static_cast<size_t>(n);
  }
  check_unchanged();
  return done;
}

void ImageFile::read_exact(void* buf, size_t len, uint64_t offset, const char* what) const {
  if (read_some(buf, len, offset, what) != len)
    throw Error(EIO, std::string("unexpected end of file reading ") + what + " at file offset " +
                         std::to_string(offset) + " (+" + std::to_string(len) + " bytes; the file has " +
                         std::to_string(size()) + ")", display_);
}

}  // namespace sendense
