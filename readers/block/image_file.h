// An image file of a backup (a qcow2 level, a raw disk, a backing file or a
// VMDK extent), opened once per attach and read only through that one
// descriptor.
//
// Why: a repository is a folder other programs write to, and an image's
// name is resolved from guest- or tool-controlled data.
//  - Opening never blocks and never has side effects: the path is opened
//    O_PATH first and anything but a regular file (a FIFO, a device, a
//    socket planted under an image's name) is refused before a real open.
//  - Every read of an attach goes through the descriptor opened at attach,
//    so no reader ever mixes tables of one version with data of another.
//  - The identity taken at open (size, mtime, link count) is checked after
//    every read. A file truncated, rewritten in place or replaced by a
//    rename since the attach answers EIO from then on, with a log line.
//    mtime moves when a write(2), truncate(2) or the first mmap write
//    starts, so a change racing a read is caught by the check after it.
//    Best effort, not a lock: a writer already in the middle of one long
//    write(2) when the image is opened, or one that puts mtime back and
//    keeps the size, is not seen (a read lease would see it; not done).
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "readers/common/unique_fd.h"

namespace sendense {

class ImageFile {
 public:
  // Opens `path` read-only as described above; `display` names it in
  // errors. Throws Error: the open's errno (ENOENT, EACCES, ...), or EIO
  // "not a regular file".
  static std::shared_ptr<const ImageFile> open(const std::string& path, const std::string& display);

  int fd() const { return fd_.get(); }
  uint64_t size() const { return static_cast<uint64_t>(identity_.st_size); }
  const std::string& display() const { return display_; }

  // Fills buf[0, len) from `offset`, then checks the file is unchanged.
  // Throws Error(EIO) naming the file, the offset and `what`.
  void read_exact(void* buf, size_t len, uint64_t offset, const char* what) const;

  // Reads up to `len` bytes (fewer only at the end of the file as opened),
  // then checks the file is unchanged. Returns the count.
  size_t read_some(void* buf, size_t len, uint64_t offset, const char* what) const;

  // Throws Error(EIO) if the file was truncated, extended or written since
  // it was opened (logged once per file).
  void check_unchanged() const;

  // True once a check found the file changed (no system call).
  bool changed() const { return changed_.load(std::memory_order_relaxed); }
  // Checks now (check_unchanged without the throw), then answers changed().
  bool check_changed() const;

  // The path the kernel gives for the opened file (/proc/self/fd): what a
  // confinement check must hold, since the name may have moved meanwhile.
  const std::string& opened_path() const { return opened_path_; }

  // Worker mode: the descriptor the daemon passed in for this file (the
  // daemon's name for it in a file map); -1 otherwise.
  int passed_fd() const { return passed_fd_; }

  ImageFile(UniqueFd fd, const struct stat& identity, std::string display, std::string opened_path);

 private:
  [[noreturn]] void fail_changed(const std::string& how) const;

  UniqueFd fd_;
  struct stat identity_;
  std::string display_;
  std::string opened_path_;
  mutable std::atomic<bool> changed_{false};
  int passed_fd_ = -1;
};

using ImageFilePtr = std::shared_ptr<const ImageFile>;

// Worker mode (worker/, issue 10): the sandboxed worker opens no file by
// name. The daemon validates every chain and opens its files itself, then
// passes the descriptors in; the worker installs this table once, before
// it reads anything. From then on ImageFile::open(path) answers a dup of
// the descriptor passed for `path`, and the chain's name resolution
// (image_chain.cpp) answers the canonical name the daemon resolved; a name
// not in the table is EACCES naming it. Never installed in the daemon.
struct PassedImageFiles {
  std::map<std::string, int> fds;                // path as ImageFile::open is given it -> descriptor
  std::map<std::string, std::string> canonical;  // name as requested (files and folders) -> canonical path
};
void install_passed_image_files(PassedImageFiles table);
const PassedImageFiles* passed_image_files();  // nullptr unless installed

}  // namespace sendense
