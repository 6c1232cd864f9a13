// Fuzz target: the daemon's side of the worker protocol (worker/replies.h),
// the one parser that runs as root on bytes a hostile image can choose
// (through a worker it has taken over).
// Input: a selector byte, then per reply kind its parameters and the reply:
//   0 hello;  1 an attribute with its map;  2 a readdir page (cookie u8,
//   max u16, reply);  3 read_files (count u8, that many sizes u16 x 2,
//   reply);  4 extended attribute names;  5 a map asked for (kMap).
// Checks the contract of each: what is returned is what an honest worker
// could have said (names, maps inside the image files, sizes), or an Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "readers/common/error.h"
#include "readers/fs/names.h"
#include "worker/replies.h"

namespace {

using namespace sendense;
using namespace sendense::worker;

// The daemon's image files in the check: one of 1 MiB, one of a page, one empty.
constexpr uint64_t kImageSizes[] = {1 << 20, 4096, 0};

void check_attr(const Attr& a) {
  for (const timespec& t : {a.atime, a.mtime, a.ctime})
    if (t.tv_nsec < 0 || t.tv_nsec > 999'999'999) std::abort();
}

void check_covered(const Attr& a, const std::vector<MappedExtent>& map) {
  if (map.empty()) return;
  uint64_t total = 0;
  for (const auto& e : map) {
    if (e.length == 0) std::abort();
    if (e.file != kZeros && (e.file >= std::size(kImageSizes) || e.offset + e.length > kImageSizes[e.file] ||
                             e.offset + e.length < e.offset))
      std::abort();
    total += e.length;
  }
  if (total != a.size) std::abort();
}

void one(uint8_t kind, std::span<const std::byte> in) {
  const std::span<const uint64_t> images(kImageSizes);
  switch (kind % 6) {
    case 0: {
      const Hello h = decode_checked_hello(in, "fuzz");
      for (const auto& v : h.volumes)
        if (v.name.empty() || v.name == "." || v.name == ".." || v.name.find('/') != std::string::npos) std::abort();
      break;
    }
    case 1: {
      Reader r(in);
      const AttrMap am = get_checked_attr_map(r, images);
      check_attr(am.attr);
      if (!am.map.empty() && (am.map.size() > kMapMaxExtents || am.attr.size > kMapMaxSize)) std::abort();
      check_covered(am.attr, am.map);
      break;
    }
    case 2: {
      if (in.size() < 3) return;
      const uint64_t cookie = static_cast<uint8_t>(in[0]);
      uint16_t max;
      std::memcpy(&max, in.data() + 1, sizeof max);
      const auto page = decode_page(in.subspan(3), cookie, max, images);
      if (page.size() > max) std::abort();
      uint64_t last = cookie;
      for (const auto& p : page) {
        const auto& name = p.entry.name;
        if (!valid_entry_name(name) && name != "." && name != "..") std::abort();
        if (p.entry.next <= last) std::abort();
        last = p.entry.next;
        if (p.attr) {
          check_attr(p.attr->attr);
          check_covered(p.attr->attr, p.attr->map);
        }
      }
      break;
    }
    case 3: {
      if (in.empty()) return;
      const size_t n = std::min<size_t>(static_cast<uint8_t>(in[0]), kReadFilesMax);
      if (in.size() < 1 + 2 * n) return;
      std::vector<uint64_t> sizes(n);
      for (size_t i = 0; i < n; ++i) {
        uint16_t s;
        std::memcpy(&s, in.data() + 1 + 2 * i, sizeof s);
        sizes[i] = uint64_t{s} * 2;  // up to kReadFilesMaxSize
      }
      const auto files = decode_read_files(in.subspan(1 + 2 * n), sizes);
      if (files.size() != n) std::abort();
      for (size_t i = 0; i < n; ++i)
        if (files[i] && files[i]->size() != sizes[i]) std::abort();
      break;
    }
    case 4: {
      Reader r(in);
      for (const auto& n : get_xattr_names(r))
        if (n.empty() || n.find('\0') != std::string::npos) std::abort();
      break;
    }
    case 5: {
      Reader r(in);
      const Attr a = get_attr(r);
      const auto map = get_map(r);
      check_map(a, map, images, kMapMaxExtentsAsked, UINT64_MAX);
      check_covered(a, map);
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  try {
    one(data[0], std::as_bytes(std::span(data + 1, size - 1)));
  } catch (const sendense::Error&) {
    // refused: what the daemon does with a lying worker's reply
  }
  return 0;
}
