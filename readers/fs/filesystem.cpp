#include "readers/fs/filesystem.h"

#include <exception>

namespace sendense {

std::vector<std::vector<std::byte>> Filesystem::read_files(std::span<const WholeFile> files) {
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
