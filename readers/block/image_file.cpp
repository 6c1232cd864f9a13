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

const PassedImageFiles* g_passed = nullptr;  // set once at worker start, before any thread reads

}  // namespace

void install_passed_image_files(PassedImageFiles table) {
  static PassedImageFiles installed;
  installed = std::move(table);
  g_passed = &installed;
}

const PassedImageFiles* passed_image_files() { return g_passed; }

ImageFile::ImageFile(UniqueFd fd, const struct stat& identity, std::string display, std::string opened_path)
    : fd_(std::move(fd)), identity_(identity), display_(std::move(display)), opened_path_(std::move(opened_path)) {}

ImageFilePtr ImageFile::open(const std::string& path, const std::string& display) {
  if (g_passed) {
    // Worker mode: only what the daemon opened and passed in.
    auto it = g_passed->fds.find(path);
    if (it == g_passed->fds.end())
      throw Error(EACCES, "'" + path + "' was not passed in by the daemon (the worker opens no file by name)", display);
    UniqueFd fd(::fcntl(it->second, F_DUPFD_CLOEXEC, 0));
    if (!fd) throw sys_error("cannot duplicate passed descriptor", display);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw sys_error("cannot stat image", display);
    if (!S_ISREG(st.st_mode)) throw Error(EIO, "not a regular file", display);
    auto file = std::make_shared<ImageFile>(std::move(fd), st, display, path);
    file->passed_fd_ = it->second;
    return file;
  }
  // O_PATH opens nothing: no FIFO rendezvous, no device open routine.
  UniqueFd probe(::open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!probe) throw sys_error("cannot open image", display);
  struct stat probed {};
  if (::fstat(probe.get(), &probed) != 0) throw sys_error("cannot stat image", display);
  if (!S_ISREG(probed.st_mode)) throw Error(EIO, "not a regular file", display);

  // The real open goes through the O_PATH descriptor, so it is the inode
  // just checked (a regular file) even if the name was swapped meanwhile.
  // Without /proc there is no such reopen: fail rather than open by name.
  const std::string self = "/proc/self/fd/" + std::to_string(probe.get());
  UniqueFd fd(::open(self.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) throw sys_error("cannot open image (through /proc/self/fd)", display);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw sys_error("cannot stat image", display);
  if (!S_ISREG(st.st_mode) || st.st_dev != probed.st_dev || st.st_ino != probed.st_ino)
    throw Error(EIO, "not a regular file (the name changed while it was opened)", display);
  char target[4096];
  const ssize_t n = ::readlink(self.c_str(), target, sizeof target - 1);
  std::string opened = n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string();
  return std::make_shared<const ImageFile>(std::move(fd), st, display, std::move(opened));
}

void ImageFile::fail_changed(const std::string& how) const {
  if (!changed_.exchange(true))
    log::error("image_changed", {{"image", display_}, {"change", how},
                                 {"action", "EIO until the backup is attached again"}});
  throw Error(EIO, "image file changed while attached (" + how + "): reads refused until it is attached again",
              display_);
}

bool ImageFile::check_changed() const {
  try {
    check_unchanged();
  } catch (const Error&) {
  }
  return changed();
}

void ImageFile::check_unchanged() const {
  if (changed_.load(std::memory_order_relaxed)) fail_changed("seen before");
  struct stat now {};
  // A file that can no longer be stat'ed (ESTALE: replaced on an NFS
  // server) is as gone as a replaced one.
  if (::fstat(fd_.get(), &now) != 0) fail_changed(std::string("cannot stat it: ") + std::strerror(errno));
  if (now.st_nlink == 0 && identity_.st_nlink != 0) fail_changed("replaced or removed: the name now holds another file");
  if (now.st_size != identity_.st_size)
    fail_changed("size " + std::to_string(identity_.st_size) + " -> " + std::to_string(now.st_size) + " bytes");
  // mtime moves when a write or truncate starts; ctime alone also moves for
  // chmod, xattrs or a hard link (snapshots, dedupe), which change no byte.
  if (!same_time(now.st_mtim, identity_.st_mtim)) fail_changed("written in place");
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
