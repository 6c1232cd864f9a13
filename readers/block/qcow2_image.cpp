// A qcow2 image with its whole backing chain, read-only.
//
// Who does what:
//  - We read and validate every header ourselves (qcow2_header.cpp) and
//    resolve the backing chain (confinement, loops, depth, formats) before
//    libqcow opens any file.
//  - We walk the L1/L2 tables ourselves to classify each cluster of a read
//    as data (allocated in this level, plain or compressed), zero, or
//    unallocated (falls through to the backing file, zeros past its end).
//    Each L1/L2 entry is checked against the file size first.
//  - libqcow reads the data clusters (and inflates compressed ones), one
//    level at a time, only over ranges allocated in that level.
//
// Why not let libqcow follow the chain itself: libqcow 20201213 gets three
// things wrong that real backup chains hit.
//  1. A read that starts in an unallocated cluster is served entirely from
//     the parent, for the whole rest of the buffer, even where later
//     clusters are allocated in the child (wrong data on multi-cluster reads).
//  2. v3 "reads as zero" L2 entries (bit 0) are not understood: the entry is
//     taken as a host offset, so the read returns the image's own metadata.
//  3. A backing file smaller than the overlay makes the parent read return 0
//     bytes and the child's read loop spin forever.
// libqcow still needs its parent set (it refuses to read an image with a
// backing name otherwise), so every pooled chain links them; we simply
// never ask a level for a range it does not hold.
//
// Threading: libqcow serialises reads on one handle, so we keep a pool of
// up to kMaxOpenChains opened chains; read_at borrows one under pool_mutex_.
// Headers, L1 tables and the metadata fds are immutable after open and
// shared (pread is positional).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libqcow.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <utility>

#include "readers/block/block_device.h"
#include "readers/block/image_chain.h"
#include "readers/block/qcow2_header.h"
#include "readers/common/error.h"

namespace sendense {

namespace {

constexpr size_t kMaxOpenChains = 4;
constexpr std::chrono::seconds kBorrowTimeout{60};

// ---- small RAII helpers ------------------------------------------------

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Fd open_readonly(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw sys_error("cannot open image", path);
  return Fd(fd);
}

struct QcowErrorDeleter {
  void operator()(libqcow_error_t* e) const { libqcow_error_free(&e); }
};
using QcowErrorPtr = std::unique_ptr<libqcow_error_t, QcowErrorDeleter>;

struct QcowFileDeleter {
  void operator()(libqcow_file_t* f) const { libqcow_file_free(&f, nullptr); }  // closes if open
};
using QcowFilePtr = std::unique_ptr<libqcow_file_t, QcowFileDeleter>;

// Takes ownership of a libqcow error and returns its message.
std::string take_message(libqcow_error_t* raw) {
  QcowErrorPtr error(raw);
  if (!error) return "unknown libqcow error";
  char buf[2048] = {};
  if (libqcow_error_sprint(error.get(), buf, sizeof buf) < 0) return "unknown libqcow error";
  std::string s(buf);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

bool file_has_qcow2_magic(int fd) {
  unsigned char magic[4] = {};
  ssize_t n;
  do {
    n = ::pread(fd, magic, sizeof magic, 0);
  } while (n < 0 && errno == EINTR);
  return n == 4 && qcow2::load_be32(magic) == qcow2::kMagic;
}

// ---- the chain ------------------------------------------------------------

struct Level {
  std::string path;      // canonical
  std::string display;   // what errors name: the path as given for the top, canonical below
  qcow2::Header header;
  std::vector<uint64_t> l1;
  Fd fd;                 // our own O_RDONLY fd for metadata (L2 entries)
};

// The chain validated by image_chain (confinement, loops, depth, formats),
// then held to what libqcow reads. Loads L1 tables when `load_tables`.
std::vector<Level> resolve_chain(const std::string& path, const std::string& confine_root, bool load_tables) {
  std::vector<Level> chain;
  std::vector<image_chain::Link> links = image_chain::resolve(path, ImageFormat::qcow2, confine_root);
  for (size_t i = 0; i < links.size(); ++i) {
    image_chain::Link& link = links[i];
    if (link.info.format != ImageFormat::qcow2)
      throw Error(EOPNOTSUPP, "backing file '" + link.info.path + "' is a " + to_string(link.info.format) +
                                  " image: the libqcow reader reads qcow2 chains only (" +
                                  to_string(link.info.format) + " backing files are not supported by libqcow)",
                  links[i - 1].display);
    Level level;
    level.path = link.info.path;
    level.display = link.display;
    level.header = link.header;
    qcow2::check_supported(level.header, level.display);
    level.fd = open_readonly(level.path);
    if (load_tables) level.l1 = qcow2::read_l1_table(level.fd.get(), level.header, level.display);
    chain.push_back(std::move(level));
  }
  return chain;
}

// One opened libqcow handle per level, top first, each linked to its parent.
class OpenChain {
 public:
  explicit OpenChain(const std::vector<Level>& levels) {
    files_.resize(levels.size());
    for (size_t i = 0; i < levels.size(); ++i) {
      libqcow_file_t* raw = nullptr;
      libqcow_error_t* error = nullptr;
      if (libqcow_file_initialize(&raw, &error) != 1)
        throw Error(EIO, "libqcow: " + take_message(error), levels[i].display);
      files_[i].reset(raw);
      if (libqcow_file_open(raw, levels[i].path.c_str(), libqcow_get_access_flags_read(), &error) != 1)
        throw Error(EIO, "libqcow cannot open the image: " + take_message(error), levels[i].display);
    }
    for (size_t i = 0; i + 1 < levels.size(); ++i) {
      libqcow_error_t* error = nullptr;
      if (libqcow_file_set_parent_file(files_[i].get(), files_[i + 1].get(), &error) != 1)
        throw Error(EIO, "libqcow cannot link backing file '" + levels[i + 1].path + "': " + take_message(error),
                    levels[i].display);
    }
  }
  // A child refers to its parent: free from the top down.
  ~OpenChain() {
    for (auto& f : files_) f.reset();
  }
  OpenChain(const OpenChain&) = delete;
  OpenChain& operator=(const OpenChain&) = delete;

  libqcow_file_t* file(size_t level) const { return files_[level].get(); }

 private:
  std::vector<QcowFilePtr> files_;
};

enum class Kind { data, zero, unallocated };

class Qcow2Image final : public BlockDevice {
 public:
  Qcow2Image(std::vector<Level> levels, std::unique_ptr<OpenChain> first) : levels_(std::move(levels)) {
    free_.push_back(std::move(first));
    opened_ = 1;
  }

  uint64_t size() const override { return levels_.front().header.virtual_size; }
  std::string describe() const override { return levels_.front().display; }
  std::string reader() const override { return "libqcow"; }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    if (buf.empty()) return;
    Lease lease(*this);
    read_level(lease.chain(), 0, offset, buf.data(), buf.size());
  }

 private:
  // Borrows an opened chain from the pool for the duration of one read.
  class Lease {
   public:
    explicit Lease(const Qcow2Image& image) : image_(image) { chain_ = image_.borrow(); }
    ~Lease() { image_.give_back(std::move(chain_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    const OpenChain& chain() const { return *chain_; }

   private:
    const Qcow2Image& image_;
    std::unique_ptr<OpenChain> chain_;
  };

  std::unique_ptr<OpenChain> borrow() const {
    std::unique_lock lock(pool_mutex_);
    // Every handle busy for this long means the image's storage has stopped
    // answering (a hung NFS/CIFS server): fail this read instead of queueing
    // requests, and with them the daemon's threads, behind it forever.
    if (!pool_cv_.wait_for(lock, kBorrowTimeout, [&] { return !free_.empty() || opened_ < kMaxOpenChains; }))
      throw Error(EIO, "every reader of the image has been busy for " + std::to_string(kBorrowTimeout.count()) +
                           " s (unresponsive storage?)", describe());
    if (!free_.empty()) {
      auto chain = std::move(free_.back());
      free_.pop_back();
      return chain;
    }
    ++opened_;
    lock.unlock();
    try {
      return std::make_unique<OpenChain>(levels_);
    } catch (...) {
      lock.lock();
      --opened_;
      pool_cv_.notify_one();
      throw;
    }
  }

  void give_back(std::unique_ptr<OpenChain> chain) const {
    {
      std::lock_guard lock(pool_mutex_);
      free_.push_back(std::move(chain));
    }
    pool_cv_.notify_one();
  }

  // Fills out[0, len) with level k's view of [offset, offset + len).
  void read_level(const OpenChain& chain, size_t k, uint64_t offset, std::byte* out, size_t len) const {
    if (k == levels_.size()) {  // below the base: nothing there
      std::memset(out, 0, len);
      return;
    }
    const Level& level = levels_[k];
    const uint64_t vsize = level.header.virtual_size;
    if (offset >= vsize) {  // a backing file smaller than its overlay reads as zeros past its end
      std::memset(out, 0, len);
      return;
    }
    if (len > vsize - offset) {
      const size_t inside_len = static_cast<size_t>(vsize - offset);
      std::memset(out + inside_len, 0, len - inside_len);
      len = inside_len;
    }

    const uint32_t cluster_bits = level.header.cluster_bits;
    const uint32_t l2_bits = cluster_bits - 3;
    const uint64_t end = offset + len;

    // Pending run of clusters of the same kind.
    Kind run_kind = Kind::zero;
    uint64_t run_start = offset;
    uint64_t run_end = offset;
    auto flush = [&] {
      if (run_end == run_start) return;
      std::byte* dst = out + (run_start - offset);
      const size_t n = static_cast<size_t>(run_end - run_start);
      switch (run_kind) {
        case Kind::zero: std::memset(dst, 0, n); break;
        case Kind::unallocated: read_level(chain, k + 1, run_start, dst, n); break;
        case Kind::data: read_data(chain, k, run_start, dst, n); break;
      }
      run_start = run_end;
    };
    auto add = [&](Kind kind, uint64_t from, uint64_t to) {
      if (kind != run_kind) {
        flush();
        run_kind = kind;
        run_start = from;
      }
      run_end = to;
    };

    std::vector<unsigned char> entries;
    uint64_t pos = offset;
    while (pos < end) {
      const uint64_t first_cluster = pos >> cluster_bits;
      const uint64_t l1_index = first_cluster >> l2_bits;
      // The part of the request this L2 table maps.
      const uint64_t table_end = std::min(end, (l1_index + 1) << (l2_bits + cluster_bits));
      const uint64_t last_cluster = (table_end - 1) >> cluster_bits;

      const uint64_t l2_offset = l2_table_offset(level, l1_index);
      if (l2_offset == 0) {
        add(Kind::unallocated, pos, table_end);
        pos = table_end;
        continue;
      }
      const uint64_t first_index = first_cluster & ((uint64_t{1} << l2_bits) - 1);
      const uint64_t count = last_cluster - first_cluster + 1;
      entries.resize(count * 8);
      qcow2::pread_exact(level.fd.get(), entries.data(), entries.size(), l2_offset + first_index * 8, level.display,
                         "L2 table");
      for (uint64_t i = 0; i < count; ++i) {
        const uint64_t cluster = first_cluster + i;
        const uint64_t from = std::max(pos, cluster << cluster_bits);
        const uint64_t to = std::min(table_end, (cluster + 1) << cluster_bits);
        const Kind kind = classify(level, qcow2::load_be64(entries.data() + i * 8), cluster, from - (cluster << cluster_bits),
                                   to - from);
        add(kind, from, to);
      }
      pos = table_end;
    }
    flush();
  }

  // The L2 table offset for `l1_index`, validated; 0 if unallocated.
  static uint64_t l2_table_offset(const Level& level, uint64_t l1_index) {
    const uint64_t entry = level.l1.at(l1_index);  // in range: check_supported sized L1 for the virtual size
    constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
    constexpr uint64_t kReserved = ~(kOffsetMask | (1ull << 63));
    const uint64_t l2 = entry & kOffsetMask;
    if ((entry & kReserved) != 0 || l2 % level.header.cluster_size != 0 ||
        (l2 != 0 && (l2 > level.header.file_size || level.header.cluster_size > level.header.file_size - l2)))
      throw Error(EIO, "damaged qcow2 image: L1 entry " + std::to_string(l1_index) + " (" + std::to_string(entry) +
                           ") points to an invalid L2 table (file is " + std::to_string(level.header.file_size) +
                           " bytes)", level.display);
    return l2;
  }

  // What an L2 entry means for bytes [in_cluster, in_cluster + n) of `cluster`.
  static Kind classify(const Level& level, uint64_t entry, uint64_t cluster, uint64_t in_cluster, uint64_t n) {
    const auto& h = level.header;
    auto bad = [&](const std::string& why) -> Error {
      return Error(EIO, "damaged qcow2 image: L2 entry for virtual offset " + std::to_string(cluster << h.cluster_bits) +
                            " " + why, level.display);
    };
    if (entry & (1ull << 62)) {  // compressed: host offset in the low x bits
      const uint32_t x = 62 - (h.cluster_bits - 8);
      const uint64_t host = entry & ((uint64_t{1} << x) - 1);
      if (host == 0 || host >= h.file_size) throw bad("points to compressed data past the end of the file");
      return Kind::data;
    }
    constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
    constexpr uint64_t kReserved = 0x3f000000000001feull;  // bits 1-8 and 56-61
    if (entry & kReserved) throw bad("has reserved bits set");
    const bool zero_flag = (entry & 1) != 0;
    if (zero_flag && h.version < 3) throw bad("has the zero flag in a version 2 image");
    if (zero_flag) return Kind::zero;
    const uint64_t host = entry & kOffsetMask;
    if (host == 0) return Kind::unallocated;
    if (host % h.cluster_size != 0) throw bad("points to an unaligned cluster");
    if (host > h.file_size || in_cluster + n > h.file_size - host)
      throw bad("points past the end of the file (" + std::to_string(h.file_size) + " bytes)");
    return Kind::data;
  }

  void read_data(const OpenChain& chain, size_t k, uint64_t offset, std::byte* dst, size_t n) const {
    libqcow_error_t* error = nullptr;
    const ssize_t got = libqcow_file_read_buffer_at_offset(chain.file(k), dst, n, static_cast<off64_t>(offset), &error);
    if (got < 0)
      throw Error(EIO, "read of " + std::to_string(n) + " bytes at virtual offset " + std::to_string(offset) +
                           " failed: " + take_message(error), levels_[k].display);
    if (error != nullptr) QcowErrorPtr drop(error);
    if (static_cast<size_t>(got) != n)
      throw Error(EIO, "short read at virtual offset " + std::to_string(offset) + ": " + std::to_string(got) + " of " +
                           std::to_string(n) + " bytes", levels_[k].display);
  }

  std::vector<Level> levels_;
  mutable std::mutex pool_mutex_;
  mutable std::condition_variable pool_cv_;
  mutable std::vector<std::unique_ptr<OpenChain>> free_;  // guarded by pool_mutex_
  mutable size_t opened_ = 0;                             // guarded by pool_mutex_
};

}  // namespace

BlockDevicePtr open_qcow2_image(const std::string& path, const std::string& confine_root) {
  std::vector<Level> levels = resolve_chain(path, confine_root, /*load_tables=*/true);
  auto first = std::make_unique<OpenChain>(levels);  // fail at open, not at the first read
  return std::make_shared<Qcow2Image>(std::move(levels), std::move(first));
}

std::string read_qcow2_backing_name(const std::string& path) {
  Fd fd = open_readonly(path);
  return qcow2::read_header(fd.get(), path).backing_name;
}

bool has_qcow2_magic(const std::string& path) {
  Fd fd = open_readonly(path);
  return file_has_qcow2_magic(fd.get());
}

}  // namespace sendense
