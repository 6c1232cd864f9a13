#include "readers/fs/filesystem.h"

#include <fcntl.h>

#include <exception>

#include "readers/block/image_file.h"

namespace sendense {

namespace {
constexpr size_t kAdviseExtents = 16;  // a small file's extents worth advising
}  // namespace

std::vector<std::vector<std::byte>> Filesystem::read_files(std::span<const WholeFile> files) {
  // Where the files lie is asked of the disk at once (the reads below
  // then wait for them together, not one file after another).
  for (const WholeFile& f : files) {
    try {
      if (auto extents = map_file(f.ino, kAdviseExtents))
        for (const Extent& e : *extents)
          if (e.file)
            ::posix_fadvise(e.file->fd(), static_cast<off_t>(e.offset), static_cast<off_t>(e.length),
                            POSIX_FADV_WILLNEED);
    } catch (const std::exception&) {
      // the read below reports it
    }
  }
  std::vector<std::vector<std::byte>> out(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    try {
      const uint64_t handle = open(files[i].ino);
      std::vector<std::byte> data(files[i].size);
      size_t n = 0;
      try {
        n = read(handle, 0, data);
      } catch (...) {
        release(handle);
        throw;
      }
      release(handle);
      if (n == data.size()) out[i] = std::move(data);
    } catch (const std::exception&) {
      // left empty: its READ will tell the reader what is wrong
    }
  }
  return out;
}

}  // namespace sendense
