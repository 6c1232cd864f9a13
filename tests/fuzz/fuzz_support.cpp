#include "tests/fuzz/fuzz_support.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <utility>

#include "readers/common/error.h"

namespace sendense::fuzz {

namespace {

uint64_t load_le(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// The extents flattened once into sorted, non-overlapping pieces (later
// extents win), so a read is a binary search whatever the extent count.
class MemoryDevice final : public BlockDevice {
 public:
  MemoryDevice(SparseImage image, std::string name) : image_(std::move(image)), name_(std::move(name)) {
    for (const Extent& e : image_.extents) {
      if (e.length == 0) continue;
      const uint64_t e_end = e.offset + e.length;
      std::vector<Piece> kept;
      for (const Piece& p : pieces_) {
        const uint64_t p_end = p.offset + p.length;
        if (p_end <= e.offset || p.offset >= e_end) {
          kept.push_back(p);
          continue;
        }
        if (p.offset < e.offset) kept.push_back(Piece{p.offset, p.data, e.offset - p.offset, p.fill});
        if (p_end > e_end)
          kept.push_back(Piece{e_end, p.data ? p.data + (e_end - p.offset) : nullptr, p_end - e_end, p.fill});
      }
      kept.push_back(Piece{e.offset, e.fill ? nullptr : e.bytes.data(), e.length, e.fill_byte});
      pieces_ = std::move(kept);
    }
    std::sort(pieces_.begin(), pieces_.end(), [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
  }

  uint64_t size() const override { return image_.size; }
  std::string describe() const override { return name_; }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    std::fill(buf.begin(), buf.end(), std::byte{0});
    const uint64_t end = offset + buf.size();
    auto it = std::upper_bound(pieces_.begin(), pieces_.end(), offset,
                               [](uint64_t o, const Piece& p) { return o < p.offset; });
    if (it != pieces_.begin()) --it;
    for (; it != pieces_.end() && it->offset < end; ++it) {
      const uint64_t p_end = it->offset + it->length;
      if (p_end <= offset) continue;
      const uint64_t from = std::max(offset, it->offset);
      const uint64_t to = std::min(end, p_end);
      if (it->data)
        std::memcpy(buf.data() + (from - offset), it->data + (from - it->offset), to - from);
      else
        std::memset(buf.data() + (from - offset), static_cast<int>(it->fill), to - from);
    }
  }

 private:
  struct Piece {
    uint64_t offset;
    const std::byte* data;  // nullptr: `length` copies of fill
    uint64_t length;
    std::byte fill;
  };
  SparseImage image_;
  std::string name_;
  std::vector<Piece> pieces_;
};

struct Scratch {
  std::string path;
  Scratch() {
    const char* base = std::getenv("TMPDIR");
    std::string root = base && *base ? base : (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    std::string templ = root + "/sendense-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    path = templ;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

SparseImage parse_sparse(const uint8_t* data, size_t size) {
  SparseImage image;
  if (size < 12 || std::memcmp(data, "SPX1", 4) != 0) {
    image.size = size;
    if (size > 0) {
      Extent whole;
      whole.length = size;
      whole.bytes.assign(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
      image.extents.push_back(std::move(whole));
    }
    return image;
  }
  image.size = std::min(load_le(data + 4, 8), kMaxVirtualSize);
  size_t pos = 12;
  while (pos + 12 <= size && image.extents.size() < kMaxExtents) {
    const uint64_t offset = load_le(data + pos, 8);
    const uint64_t word = load_le(data + pos + 8, 4);
    pos += 12;
    Extent e;
    e.offset = offset;
    if (word & 0x80000000u) {
      if (pos >= size) break;
      e.fill = true;
      e.fill_byte = static_cast<std::byte>(data[pos]);
      pos += 1;
      e.length = word & 0x7fffffffu;
    } else {
      const size_t present = static_cast<size_t>(std::min<uint64_t>(word, size - pos));
      e.bytes.assign(reinterpret_cast<const std::byte*>(data + pos),
                     reinterpret_cast<const std::byte*>(data + pos) + present);
      e.length = present;
      pos += present;
    }
    if (offset >= image.size || e.length == 0) continue;
    e.length = std::min<uint64_t>(e.length, image.size - offset);
    if (!e.fill) e.bytes.resize(static_cast<size_t>(e.length));
    image.extents.push_back(std::move(e));
  }
  return image;
}

BlockDevicePtr make_memory_device(SparseImage image, const std::string& name) {
  return std::make_shared<MemoryDevice>(std::move(image), name);
}

const std::string& scratch_dir() {
  static Scratch scratch;
  return scratch.path;
}

std::string write_image_file(const SparseImage& image, const std::string& name) {
  const std::string path = scratch_dir() + "/" + name;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ftruncate(fd, static_cast<off_t>(image.size)) == 0;
  std::vector<std::byte> filled;
  uint64_t fill_budget = kMaxFileFillBytes;
  for (const Extent& e : image.extents) {
    if (!ok) break;
    if (!e.fill) {
      ok = pwrite(fd, e.bytes.data(), e.bytes.size(), static_cast<off_t>(e.offset)) ==
           static_cast<ssize_t>(e.bytes.size());
      continue;
    }
    if (e.fill_byte == std::byte{0}) continue;  // a hole reads as zeros
    filled.assign(64 * 1024, e.fill_byte);
    const uint64_t length = std::min(e.length, fill_budget);
    fill_budget -= length;
    for (uint64_t done = 0; ok && done < length; done += filled.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(filled.size(), length - done));
      ok = pwrite(fd, filled.data(), n, static_cast<off_t>(e.offset + done)) == static_cast<ssize_t>(n);
    }
  }
  if (fd >= 0) ::close(fd);
  if (!ok) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

namespace {

struct Walker {
  Walker(Filesystem& f, const WalkLimits& l) : fs(f), limits(l) {}

  Filesystem& fs;
  const WalkLimits& limits;
  size_t entries = 0;
  uint64_t bytes = 0;
  std::set<uint64_t> dirs_seen;
  std::vector<std::byte> buf = std::vector<std::byte>(64 * 1024);

  template <typename F>
  static void expect_errors(F&& f) {
    try {
      f();
    } catch (const Error&) {
      // Damaged input is reported with sendense::Error: expected.
    }
  }

  void xattrs(uint64_t ino) {
    expect_errors([&] {
      const std::vector<std::string> names = fs.listxattr(ino);
      for (size_t i = 0; i < names.size() && i < limits.max_xattrs; ++i)
        expect_errors([&] { (void)fs.getxattr(ino, names[i]); });
      (void)fs.getxattr(ino, "user.sendense-fuzz-absent");
    });
  }

  void read_file(uint64_t ino, uint64_t size) {
    expect_errors([&] { (void)fs.map_file(ino, 16); });  // what a worker sends with small files
    expect_errors([&] {
      const uint64_t handle = fs.open(ino);
      expect_errors([&] {
        uint64_t offset = 0;
        const uint64_t cap = std::min(size, limits.max_file_bytes);
        while (offset < cap && bytes < limits.max_total_bytes) {
          const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), cap - offset));
          const size_t got = fs.read(handle, offset, std::span<std::byte>(buf.data(), want));
          bytes += want;
          if (got == 0) break;
          offset += got;
        }
        // One read far past what was read, and one past the end.
        if (size > cap) (void)fs.read(handle, size - 1, std::span<std::byte>(buf.data(), 1));
        (void)fs.read(handle, size, std::span<std::byte>(buf.data(), 16));
      });
      fs.release(handle);
    });
  }

  void visit(uint64_t ino, const Attr& attr, size_t depth) {
    xattrs(ino);
    switch (attr.mode & S_IFMT) {
      case S_IFDIR:
        if (depth < limits.max_depth) dir(ino, depth + 1);
        break;
      case S_IFLNK:
        expect_errors([&] { (void)fs.readlink(ino); });
        break;
      case S_IFREG:
        read_file(ino, attr.size);
        break;
      default:
        break;
    }
  }

  void dir(uint64_t ino, size_t depth) {
    if (!dirs_seen.insert(ino).second) return;
    // A page at a time, as the daemon lists (small pages: more cookies tried).
    std::vector<DirEntry> list;
    expect_errors([&] {
      for (uint64_t cookie = 0;;) {
        auto page = fs.readdir_page(ino, cookie, 64, false);
        if (page.empty() || list.size() > limits.max_entries) break;
        cookie = page.back().next;
        list.insert(list.end(), page.begin(), page.end());
      }
    });
    for (const DirEntry& e : list) {
      if (++entries > limits.max_entries) return;
      if (e.name == "." || e.name == "..") continue;
      std::optional<Attr> found;
      expect_errors([&] { found = fs.lookup(ino, e.name); });
      expect_errors([&] {
        const Attr a = fs.getattr(e.ino);
        visit(e.ino, a, depth);
      });
    }
    expect_errors([&] { (void)fs.lookup(ino, "sendense-fuzz-absent"); });
  }
};

}  // namespace

void walk(Filesystem& fs, const WalkLimits& limits) {
  Walker w(fs, limits);
  (void)fs.type_name();
  (void)fs.journal();
  Walker::expect_errors([&] { (void)fs.statfs(); });
  Walker::expect_errors([&] {
    const uint64_t root = fs.root_ino();
    const Attr a = fs.getattr(root);
    w.xattrs(root);
    if ((a.mode & S_IFMT) == S_IFDIR) w.dir(root, 0);
  });
}

}  // namespace sendense::fuzz
