// NTFS over libntfs-3g (see ntfs_filesystem.h).
//
// Locks (never two held at once, so there is no order to get wrong, except
// the caches' own and the backup's cache budget's, which call nothing out;
// an OpenFile's library handles are closed under lib_mutex_ by release() or
// the destructor, and read() checks them under the same lock):
//   lib_mutex_     every libntfs-3g call (the library is not thread-safe;
//                  process-wide, shared by every NTFS volume)
//   handles_mutex_ the table of open files (shared for read())
//   dir_indexes_   the per-directory name cache (its own mutex)
// Plain non-resident data (not compressed, not encrypted) is mapped once at
// open() into an immutable run list and read() goes straight to the
// BlockDevice without lib_mutex_; resident, compressed and other data is
// read through ntfs_attr_pread under lib_mutex_.
#include "readers/fs/ntfs/ntfs_filesystem.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/fs/dir_index.h"
#include "readers/fs/listing_cap.h"
#include "readers/fs/ntfs/ntfs_device.h"
#include "readers/fs/ntfs/ntfs_names.h"
#include "readers/fs/ntfs/ntfs_reparse.h"

// libntfs-3g last: its types.h defines min() and max() macros. Its headers
// have no C++ guards.
extern "C" {
#include <ntfs-3g/types.h>
#include <ntfs-3g/attrib.h>
#include <ntfs-3g/dir.h>
#include <ntfs-3g/inode.h>
#include <ntfs-3g/layout.h>
#include <ntfs-3g/logging.h>
#include <ntfs-3g/security.h>
#include <ntfs-3g/volume.h>
}
#undef min
#undef max

namespace sendense {

namespace {

std::mutex& library_mutex() {
  static std::mutex m;
  return m;
}


// Limits against hostile metadata: far above what a real volume needs,
// far below what would exhaust memory.
constexpr uint64_t kMaxInode = (1ull << 40) - 1;         // node ids keep 40 bits for the inode
constexpr size_t kMaxRuns = 8u << 20;                  // runs of one file
constexpr int64_t kMaxReparseData = 16 * 1024;         // MAXIMUM_REPARSE_DATA_BUFFER_SIZE
constexpr int64_t kMaxXattrValue = 64 * 1024;          // XATTR_SIZE_MAX
constexpr int64_t kMaxInterixSymlink = 8 + 2 * 4096;   // magic + PATH_MAX UTF-16 units
constexpr size_t kMaxSecurityDescriptor = 64 * 1024;
constexpr unsigned kMaxAttrRecords = 65536;            // attribute records walked per inode

// NTFS times count 100 ns from 1601. The value is guest data: the epoch
// shift is applied to whole seconds, where it cannot overflow (subtracting
// it from the raw count can).
timespec to_timespec(sle64 t) {
  constexpr int64_t kSeconds1601To1970 = 11644473600LL;
  const int64_t v = sle64_to_cpu(t);
  int64_t sec = v / 10'000'000;
  int64_t rem = v % 10'000'000;
  if (rem < 0) {
    rem += 10'000'000;
    --sec;
  }
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(sec - kSeconds1601To1970);
  ts.tv_nsec = static_cast<long>(rem * 100);
  return ts;
}

uint64_t le_at(const std::vector<unsigned char>& b, size_t off, size_t n) {
  uint64_t v = 0;
  for (size_t i = n; i-- > 0;) v = v << 8 | b[off + i];
  return v;
}

// libntfs-3g 2022.10.3 loses the 4 KiB runlist it decoded when $MFT's own
// $DATA runs past the volume (ntfs_volume_startup's error path; LeakSanitizer
// and valgrind agree; nothing outside the library can reach it), and the
// daemon retries a failed attach every 3 s. So $MFT's runlist, in its base
// record, is checked here first and the library never sees a damaged one.
// Anything else odd (boot sector, record magic, fixups) is left to the
// library, which fails without leaking.
void check_mft_runlist(const BlockDevice& device, const std::string& name) {
  std::vector<unsigned char> boot(512);
  if (device.size() < boot.size()) return;
  device.read_at(0, std::as_writable_bytes(std::span(boot)));
  if (std::memcmp(boot.data() + 3, "NTFS    ", 8) != 0) return;
  const uint64_t sector = le_at(boot, 0x0B, 2);
  const uint64_t spc = boot[0x0D] <= 0x80 ? boot[0x0D] : uint64_t{1} << std::min(256 - boot[0x0D], 31);
  const uint64_t cluster = sector * spc;
  const int8_t cpr = static_cast<int8_t>(boot[0x40]);
  const uint64_t record = cpr > 0 ? cpr * cluster : uint64_t{1} << std::min(-cpr, 31);
  if (sector < 256 || sector > 4096 || cluster == 0 || cluster > (2u << 20) || record < sector || record > 65536 ||
      record % sector != 0)
    return;
  const uint64_t clusters = std::min(le_at(boot, 0x28, 8) / spc, device.size() / cluster);
  const uint64_t mft_lcn = le_at(boot, 0x30, 8);
  if (mft_lcn >= clusters || record > (clusters - mft_lcn) * cluster) return;
  std::vector<unsigned char> r(record);
  device.read_at(mft_lcn * cluster, std::as_writable_bytes(std::span(r)));
  if (std::memcmp(r.data(), "FILE", 4) != 0) return;
  const size_t usa = le_at(r, 4, 2), usa_count = le_at(r, 6, 2);
  if (usa_count != record / sector + 1 || usa + 2 * usa_count > r.size()) return;
  for (size_t i = 1; i < usa_count; ++i) {  // the update sequence: each sector's last 2 bytes
    const size_t end = i * sector - 2;
    if (r[end] != r[usa] || r[end + 1] != r[usa + 1]) return;
    r[end] = r[usa + 2 * i];
    r[end + 1] = r[usa + 2 * i + 1];
  }
  auto damaged = [&](const std::string& what) {
    throw Error(EIO, "$MFT's data runlist (MFT record 0) is damaged: " + what, name);
  };
  for (size_t pos = le_at(r, 0x14, 2); pos + 16 <= r.size();) {
    const uint64_t type = le_at(r, pos, 4), length = le_at(r, pos + 4, 4);
    if (type == 0xFFFFFFFFu || length < 16 || length > r.size() - pos) return;
    if (type != 0x80 || r[pos + 8] != 1 || r[pos + 9] != 0 || length < 0x40 || le_at(r, pos + 0x10, 8) != 0) {
      pos += length;
      continue;
    }
    const size_t end = pos + length;
    size_t mp = pos + le_at(r, pos + 0x20, 2);
    int64_t lcn = 0;
    for (uint64_t run = 0; mp < end && r[mp] != 0; ++run) {
      const size_t lbytes = r[mp] & 0xF, obytes = r[mp] >> 4;
      if (lbytes == 0 || lbytes > 8 || obytes > 8 || mp + 1 + lbytes + obytes > end)
        damaged("run " + std::to_string(run) + " is malformed");
      auto signed_at = [&](size_t off, size_t n) {
        uint64_t v = le_at(r, off, n);
        if (n < 8 && (v >> (8 * n - 1)) != 0) v |= ~uint64_t{0} << (8 * n);
        return static_cast<int64_t>(v);
      };
      const int64_t count = signed_at(mp + 1, lbytes);
      if (count <= 0) damaged("run " + std::to_string(run) + " has length " + std::to_string(count));
      if (obytes == 0) damaged("run " + std::to_string(run) + " is sparse");
      const int64_t delta = signed_at(mp + 1 + lbytes, obytes);
      if (__builtin_add_overflow(lcn, delta, &lcn) || lcn < 0 || static_cast<uint64_t>(lcn) >= clusters ||
          static_cast<uint64_t>(count) > clusters - static_cast<uint64_t>(lcn))
        damaged("run " + std::to_string(run) + " (clusters " + std::to_string(lcn) + "+" + std::to_string(count) +
                ") lies outside the volume of " + std::to_string(clusters) + " clusters");
      mp += 1 + lbytes + obytes;
    }
    return;  // only the first extent lives in the base record
  }
}

// libntfs-3g declares some on-disk fields as C enums (FILE_ATTR_FLAGS,
// FILE_NAME_TYPE_FLAGS). The values are guest data: loading one outside the
// enumerators' range as the enum is undefined (the sanitizer build aborts),
// so such fields are read as the plain little-endian bits they are.
template <typename Enum>
uint32_t raw_bits(const Enum& field) {
  static_assert(sizeof(Enum) <= sizeof(uint32_t));
  unsigned char b[sizeof(Enum)];
  std::memcpy(b, &field, sizeof b);
  uint32_t v = 0;
  for (size_t i = sizeof b; i-- > 0;) v = v << 8 | b[i];
  return v;
}

std::string le_bytes(uint64_t v, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i, v >>= 8) out.push_back(static_cast<char>(v & 0xff));
  return out;
}

// libntfs-3g messages go to our log (debug for chatter, warn for errors),
// never to the daemon's stderr unformatted.
int log_handler(const char* function, const char*, int, u32 level, void*, const char* format, va_list args) {
  if (level & (NTFS_LOG_LEVEL_DEBUG | NTFS_LOG_LEVEL_TRACE | NTFS_LOG_LEVEL_ENTER | NTFS_LOG_LEVEL_LEAVE))
    return 0;
  char buf[512];
  const int saved = errno;
  std::vsnprintf(buf, sizeof buf, format, args);
  std::string msg(buf);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  if (level & NTFS_LOG_LEVEL_PERROR) msg += std::string(": ") + std::strerror(saved);
  const bool bad = (level & (NTFS_LOG_LEVEL_ERROR | NTFS_LOG_LEVEL_PERROR | NTFS_LOG_LEVEL_CRITICAL)) != 0;
  if (bad)
    log::warn("libntfs3g", {{"function", function ? function : ""}, {"message", msg}});
  else
    log::debug("libntfs3g", {{"function", function ? function : ""}, {"message", msg}});
  errno = saved;
  return static_cast<int>(msg.size());
}

struct InodeCloser {
  void operator()(ntfs_inode* ni) const {
    if (ni != nullptr) ntfs_inode_close(ni);
  }
};
using InodePtr = std::unique_ptr<ntfs_inode, InodeCloser>;

struct AttrCloser {
  void operator()(ntfs_attr* na) const {
    if (na != nullptr) ntfs_attr_close(na);
  }
};
using AttrPtr = std::unique_ptr<ntfs_attr, AttrCloser>;

struct SearchCtxCloser {
  void operator()(ntfs_attr_search_ctx* ctx) const {
    if (ctx != nullptr) ntfs_attr_put_search_ctx(ctx);
  }
};
using SearchCtxPtr = std::unique_ptr<ntfs_attr_search_ctx, SearchCtxCloser>;

enum class Kind { directory, regular, symlink };

// What getattr/readlink/open need of an inode, read under lib_mutex_.
struct InodeInfo {
  Kind kind = Kind::regular;
  std::string symlink_target;
  uint32_t reparse_tag = 0;
};

struct Run {
  uint64_t vcn = 0;
  int64_t lcn = 0;  // LCN_HOLE (-1) for a sparse run
  uint64_t length = 0;
};

// One open file. Either a run map (direct reads) or library handles (read
// under the volume lock). Library handles are closed by the filesystem
// under its lock (release() / destructor), never by this struct.
struct OpenFile {
  uint64_t ino = 0;
  uint64_t size = 0;
  uint64_t initialized = 0;  // bytes past this read as zeros (valid data length)
  bool direct = false;
  std::vector<Run> runs;     // direct: sorted by vcn
  ntfs_inode* ni = nullptr;  // library path
  ntfs_attr* na = nullptr;
};

class NtfsFilesystem final : public Filesystem {
 public:
  NtfsFilesystem(BlockDevicePtr device, std::string name, const FsOpenOptions& options)
      : device_(std::move(device)), name_(std::move(name)), options_(options), dir_indexes_(options.cache_budget) {
    open_library();
  }

  ~NtfsFilesystem() override {
    std::lock_guard lock(lib_mutex_);
    for (auto& [handle, file] : handles_) close_library_handles(*file);
    handles_.clear();
    if (vol_ != nullptr) {
      ntfs_close_secure(vol_);
      ntfs_umount(vol_, FALSE);  // frees the ntfs_device too
      vol_ = nullptr;
    }
  }

  uint64_t root_ino() const override { return FILE_root; }
  std::string type_name() const override { return "ntfs"; }
  JournalReport journal() const override { return journal_; }

  Attr getattr(uint64_t ino) override {
    std::lock_guard lock(lib_mutex_);
    InodePtr ni = open_inode(ino);
    return to_attr(ino, ni.get(), inspect(ino, ni.get()));
  }

  std::optional<Attr> lookup(uint64_t dir, std::string_view name) override {
    if (name.empty() || name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
      return std::nullopt;
    std::shared_ptr<const DirIndex> index = dir_index(dir);
    const std::string key(name);
    if (index->refused.count(key))
      throw Error(EIO, "entry '" + key + "' names an MFT record beyond 2^40 (not addressable)", where(dir));
    auto it = index->names.find(key);
    if (it == index->names.end()) return std::nullopt;
    const uint64_t ino = MREF(it->second);
    const uint16_t seq = MSEQNO(it->second);
    Attr a;
    try {
      a = getattr(ino);
    } catch (const Error& e) {
      if (e.code() != ENOENT) throw;
      throw Error(EIO, "directory entry '" + key + "' names unused MFT record " + std::to_string(ino), where(dir));
    }
    if (seq != 0 && a.generation != seq)
      throw Error(EIO, "directory entry '" + key + "' is stale (sequence " + std::to_string(seq) + ", record has " +
                           std::to_string(a.generation) + ")",
                  where(dir));
    return a;
  }

  std::vector<DirEntry> readdir(uint64_t dir) override {
    std::lock_guard lock(lib_mutex_);
    std::vector<DirEntry> out;
    for (auto& e : read_directory(dir)) {
      if (MREF(e.mref) > kMaxInode) continue;  // logged by read_directory; lookup says EIO
      out.push_back(DirEntry{std::move(e.name), MREF(e.mref), e.type});
    }
    return out;
  }

  std::string readlink(uint64_t ino) override {
    std::lock_guard lock(lib_mutex_);
    InodePtr ni = open_inode(ino);
    InodeInfo info = inspect(ino, ni.get());
    if (info.kind != Kind::symlink) throw Error(EINVAL, "not a symbolic link", where(ino));
    return info.symlink_target;
  }

  uint64_t open(uint64_t ino) override {
    auto file = std::make_shared<OpenFile>();
    {
      std::lock_guard lock(lib_mutex_);
      prepare(ino, *file);
    }
    std::unique_lock lock(handles_mutex_);
    const uint64_t handle = next_handle_++;
    handles_.emplace(handle, std::move(file));
    return handle;
  }

  size_t read(uint64_t handle, uint64_t offset, std::span<std::byte> buf) override {
    std::shared_ptr<OpenFile> file;
    {
      std::shared_lock lock(handles_mutex_);
      auto it = handles_.find(handle);
      if (it == handles_.end()) throw Error(EBADF, "unknown file handle " + std::to_string(handle), name_);
      file = it->second;
    }
    if (offset >= file->size) return 0;
    const size_t count = static_cast<size_t>(std::min<uint64_t>(buf.size(), file->size - offset));
    std::span<std::byte> out = buf.first(count);
    if (file->direct) {
      // Past the valid data length the stored clusters are not the file's.
      const uint64_t valid_end = std::min<uint64_t>(offset + count, std::max(file->initialized, offset));
      const size_t valid = static_cast<size_t>(valid_end - offset);
      if (valid > 0) read_runs(*file, offset, out.first(valid));
      std::fill(out.begin() + static_cast<ptrdiff_t>(valid), out.end(), std::byte{0});
      return count;
    }
    std::lock_guard lock(lib_mutex_);
    if (file->na == nullptr) throw Error(EBADF, "file handle already released", where(file->ino));
    size_t done = 0;
    while (done < count) {
      const s64 n = ntfs_attr_pread(file->na, static_cast<s64>(offset + done), static_cast<s64>(count - done),
                                    out.data() + done);
      if (n < 0) throw library_error("cannot read data", file->ino);
      if (n == 0) throw Error(EIO, "data ends before the file size", where(file->ino));
      done += static_cast<size_t>(n);
    }
    return count;
  }

  void release(uint64_t handle) override {
    std::shared_ptr<OpenFile> file;
    {
      std::unique_lock lock(handles_mutex_);
      auto it = handles_.find(handle);
      if (it == handles_.end()) return;
      file = std::move(it->second);
      handles_.erase(it);
    }
    if (!file->direct) {
      std::lock_guard lock(lib_mutex_);
      close_library_handles(*file);
    }
  }

  std::vector<std::string> listxattr(uint64_t ino) override {
    std::lock_guard lock(lib_mutex_);
    InodePtr ni = open_inode(ino);
    std::vector<std::string> names;
    for_each_named_stream(ni.get(), ino, [&](const std::string& stream, const ATTR_RECORD*) {
      names.push_back("user." + stream);
      return false;
    });
    return names;
  }

  std::optional<std::string> getxattr(uint64_t ino, std::string_view name) override {
    std::lock_guard lock(lib_mutex_);
    InodePtr ni = open_inode(ino);
    if (name == "system.ntfs_attrib") {
      char value[4];
      if (ntfs_get_ntfs_attrib(ni.get(), value, sizeof value) != 4)
        throw library_error("cannot read Windows attributes", ino);
      return std::string(value, sizeof value);
    }
    if (name == "system.ntfs_crtime") return le_bytes(static_cast<uint64_t>(sle64_to_cpu(ni->creation_time)), 8);
    if (name == "system.ntfs_acl") {
      SECURITY_CONTEXT scx{};
      scx.vol = vol_;
      std::string value(kMaxSecurityDescriptor, '\0');
      const int n = ntfs_get_ntfs_acl(&scx, ni.get(), value.data(), value.size());
      if (n <= 0) return std::nullopt;  // no security descriptor stored
      if (static_cast<size_t>(n) > value.size()) throw Error(EIO, "security descriptor too large", where(ino));
      value.resize(static_cast<size_t>(n));
      return value;
    }
    if (name == "system.ntfs_reparse_data") {
      if (!(raw_bits(ni->flags) & le32_to_cpu(FILE_ATTR_REPARSE_POINT))) return std::nullopt;
      return read_attribute(ni.get(), ino, AT_REPARSE_POINT, AT_UNNAMED, 0, kMaxReparseData, "reparse point");
    }
    if (!name.starts_with("user.")) return std::nullopt;
    const std::string_view stream = name.substr(5);
    std::optional<std::string> value;
    for_each_named_stream(ni.get(), ino, [&](const std::string& shown, const ATTR_RECORD* a) {
      if (shown != stream) return false;
      const auto* uname = reinterpret_cast<const ntfschar*>(reinterpret_cast<const u8*>(a) + le16_to_cpu(a->name_offset));
      // Copy the name: the search context (and the record) go away before the read.
      std::vector<ntfschar> copy(uname, uname + a->name_length);
      value = read_attribute(ni.get(), ino, AT_DATA, copy.data(), static_cast<u32>(copy.size()), kMaxXattrValue,
                             "data stream '" + shown + "'", E2BIG);
      return true;
    });
    return value;
  }

  FsStat statfs() override {
    std::lock_guard lock(lib_mutex_);
    if (!free_space_known_) {
      check_bitmap_sizes();
      if (ntfs_volume_get_free_space(vol_) != 0) throw library_error("cannot read the cluster bitmap", 0);
      free_space_known_ = true;
    }
    FsStat st;
    st.block_size = vol_->cluster_size;
    st.blocks = static_cast<uint64_t>(vol_->nr_clusters);
    st.blocks_free = static_cast<uint64_t>(std::max<s64>(0, vol_->free_clusters));
    if (vol_->mft_na != nullptr && vol_->mft_record_size > 0)
      st.files = static_cast<uint64_t>(vol_->mft_na->initialized_size) / vol_->mft_record_size;
    st.files_free = static_cast<uint64_t>(std::max<s64>(0, vol_->free_mft_records));
    st.name_max = 255;
    return st;
  }

 private:
  struct RawEntry {
    std::string name;
    uint64_t mref = 0;
    uint32_t type = 0;
  };

  std::string where(uint64_t ino) const { return name_ + " MFT record " + std::to_string(ino); }

  // An Error from the errno libntfs-3g left: damage is EIO, whatever errno
  // the library chose for it, except the few that mean what they say.
  Error library_error(const std::string& what, uint64_t ino, int fallback = EIO) const {
    const int e = errno;
    int code = fallback;
    if (e == ENOMEM || e == EACCES || e == EOPNOTSUPP || e == E2BIG) code = e;
    const std::string detail = e != 0 ? std::string(": ") + std::strerror(e) : std::string();
    return Error(code, what + detail, ino == 0 ? name_ : where(ino));
  }

  void open_library() {
    static std::once_flag log_setup;
    std::call_once(log_setup, [] { ntfs_log_set_handler(log_handler); });
    std::lock_guard lock(lib_mutex_);
    // The library reads metadata (MFT records, index blocks) in small
    // pieces, often the same ones again: give it a cache. File data read by
    // runlist goes straight to device_. 32 KiB chunks, 8 MiB per volume at most.
    check_mft_runlist(*device_, name_);
    device_holder_ = std::make_unique<ntfs::BlockDeviceNtfsDevice>(
        make_block_cache(device_, 32 * 1024, 256, options_.cache_budget), name_);
    errno = 0;
    // RDONLY: nothing is written, $LogFile is not replayed or reset, the
    // hibernation file is not refused; FORENSIC: not even in-memory fixes.
    vol_ = ntfs_device_mount(device_holder_->get(),
                             static_cast<ntfs_mount_flags>(NTFS_MNT_RDONLY | NTFS_MNT_FORENSIC));
    if (vol_ == nullptr) {
      const int e = errno;
      throw Error(e == ENOMEM ? ENOMEM : EIO,
                  std::string("cannot open NTFS volume (damaged boot sector, $MFT or metafile?)") +
                      (e != 0 ? std::string(": ") + std::strerror(e) : std::string()),
                  name_);
    }
    device_holder_->mounted();
    try {
      check_mounted_volume();
    } catch (...) {
      ntfs_close_secure(vol_);
      ntfs_umount(vol_, FALSE);
      vol_ = nullptr;
      throw;
    }
  }

  // Caller holds lib_mutex_. Geometry checks and the dirty/hibernated report.
  void check_mounted_volume() {
    if (vol_->cluster_size == 0 || static_cast<uint64_t>(vol_->nr_clusters) > device_->size() / vol_->cluster_size)
      throw Error(EIO,
                  "volume of " + std::to_string(vol_->nr_clusters) + " clusters of " +
                      std::to_string(vol_->cluster_size) + " bytes does not fit its device of " +
                      std::to_string(device_->size()) + " bytes (truncated image?)",
                  name_);
    if (ntfs_open_secure(vol_) != 0)
      log::debug("ntfs_no_secure", {{"volume", name_}, {"reason", "no $Secure: old-style security descriptors only"}});

    const bool dirty = (vol_->flags & VOLUME_IS_DIRTY) != 0;
    errno = 0;
    const bool hibernated = ntfs_volume_check_hiberfile(vol_, 0) != 0 && errno == EPERM;
    if (dirty || hibernated) {
      const std::string what = dirty && hibernated ? "marked dirty and hibernated"
                               : dirty             ? "marked dirty"
                                                   : "hibernated (Windows fast startup or hibernation)";
      journal_.state = "skipped";
      journal_.note = "NTFS volume " + what + ": shown as stored, $LogFile not replayed";
      log::warn("ntfs_unclean", {{"volume", name_}, {"dirty", dirty ? "yes" : "no"},
                                 {"hibernated", hibernated ? "yes" : "no"}, {"note", journal_.note}});
    } else {
      journal_.state = "clean";
    }
  }

  // Caller holds lib_mutex_. The library counts free clusters and MFT
  // records by reading $Bitmap and $MFT's bitmap to their stored sizes (past
  // the initialized size it just produces zeros): a size claimed far beyond
  // what the volume can need would keep statfs (and the volume's lock) busy
  // for hours. One bit per cluster / per record that fits the device, plus
  // slack for rounding and shrunk volumes.
  void check_bitmap_sizes() const {
    constexpr int64_t kSlack = 1 << 20;
    struct Bitmap {
      const char* what;
      ntfs_attr* na;
      uint64_t bits;
    };
    const uint64_t device_size = device_->size();
    const Bitmap bitmaps[] = {
        {"$Bitmap", vol_->lcnbmp_na, static_cast<uint64_t>(vol_->nr_clusters)},
        {"$MFT bitmap", vol_->mftbmp_na, vol_->mft_record_size > 0 ? device_size / vol_->mft_record_size : 0},
    };
    for (const Bitmap& b : bitmaps) {
      if (b.na == nullptr) throw Error(EIO, std::string(b.what) + " is not open", name_);
      const int64_t limit = static_cast<int64_t>(b.bits / 8) + kSlack;
      if (b.na->data_size < 0 || b.na->data_size > limit)
        throw Error(EIO,
                    std::string(b.what) + " of " + std::to_string(b.na->data_size) + " bytes, more than " +
                        std::to_string(b.bits) + " bits the volume can use",
                    name_);
    }
  }

  // Caller holds lib_mutex_.
  InodePtr open_inode(uint64_t ino) {
    if (ino > kMaxInode) throw Error(ENOENT, "no such MFT record", where(ino));
    if (ino < FILE_first_user && ino != FILE_root) throw Error(ENOENT, "metafile, not shown", where(ino));
    errno = 0;
    ntfs_inode* raw = ntfs_inode_open(vol_, static_cast<MFT_REF>(ino));
    if (raw == nullptr) {
      if (errno == ENOENT) throw Error(ENOENT, "MFT record not in use", where(ino));
      throw library_error("cannot read MFT record", ino);
    }
    InodePtr ni(raw);
    if (!(ni->mrec->flags & MFT_RECORD_IN_USE)) throw Error(ENOENT, "MFT record not in use", where(ino));
    if (MREF_LE(ni->mrec->base_mft_record) != 0) throw Error(ENOENT, "an extension record, not a file", where(ino));
    return ni;
  }

  // Caller holds lib_mutex_. Reads a whole attribute of at most `limit`
  // bytes; nullopt if it does not exist.
  std::optional<std::string> read_attribute(ntfs_inode* ni, uint64_t ino, ATTR_TYPES type, ntfschar* aname,
                                            u32 aname_len, int64_t limit, const std::string& what,
                                            int too_big = EIO) {
    errno = 0;
    AttrPtr na(ntfs_attr_open(ni, type, aname, aname_len));
    if (!na) {
      if (errno == ENOENT) return std::nullopt;
      throw library_error("cannot open " + what, ino);
    }
    if (na->data_size < 0 || na->data_size > limit)
      throw Error(too_big, what + " of " + std::to_string(na->data_size) + " bytes (limit " + std::to_string(limit) + ")",
                  where(ino));
    std::string value(static_cast<size_t>(na->data_size), '\0');
    s64 done = 0;
    while (done < na->data_size) {
      const s64 n = ntfs_attr_pread(na.get(), done, na->data_size - done, value.data() + done);
      if (n < 0) throw library_error("cannot read " + what, ino);
      if (n == 0) throw Error(EIO, what + " ends before its size", where(ino));
      done += n;
    }
    return value;
  }

  // Caller holds lib_mutex_. Walks the attribute records of `type` (each
  // attribute once: extents with lowest_vcn > 0 are skipped); `fn` returns
  // true to stop.
  template <typename Fn>
  void for_each_attribute(ntfs_inode* ni, uint64_t ino, ATTR_TYPES type, Fn&& fn) {
    SearchCtxPtr ctx(ntfs_attr_get_search_ctx(ni, nullptr));
    if (!ctx) throw library_error("cannot search attributes", ino);
    for (unsigned count = 0;; ++count) {
      if (count >= kMaxAttrRecords) throw Error(EIO, "too many attribute records", where(ino));
      errno = 0;
      if (ntfs_attr_lookup(type, nullptr, 0, CASE_SENSITIVE, 0, nullptr, 0, ctx.get()) != 0) {
        if (errno == ENOENT) return;
        throw library_error("cannot read attributes", ino);
      }
      const ATTR_RECORD* a = ctx->attr;
      if (a->non_resident && sle64_to_cpu(a->lowest_vcn) != 0) continue;
      if (a->name_length > 0 &&
          static_cast<uint32_t>(le16_to_cpu(a->name_offset)) + 2u * a->name_length > le32_to_cpu(a->length))
        throw Error(EIO, "attribute name outside its record", where(ino));
      if (fn(a)) return;
    }
  }

  template <typename Fn>
  void for_each_named_stream(ntfs_inode* ni, uint64_t ino, Fn&& fn) {
    for_each_attribute(ni, ino, AT_DATA, [&](const ATTR_RECORD* a) {
      if (a->name_length == 0) return false;
      const u8* name = reinterpret_cast<const u8*>(a) + le16_to_cpu(a->name_offset);
      return fn(ntfs::utf16le_to_utf8(name, a->name_length), a);
    });
  }

  // Caller holds lib_mutex_. Number of names (DOS 8.3 names not counted).
  uint32_t link_count(ntfs_inode* ni, uint64_t ino) {
    uint32_t links = 0;
    for_each_attribute(ni, ino, AT_FILE_NAME, [&](const ATTR_RECORD* a) {
      if (a->non_resident) throw Error(EIO, "non-resident $FILE_NAME", where(ino));
      const uint32_t off = le16_to_cpu(a->value_offset);
      const uint32_t len = le32_to_cpu(a->value_length);
      if (len < sizeof(FILE_NAME_ATTR) || off + len > le32_to_cpu(a->length))
        throw Error(EIO, "malformed $FILE_NAME", where(ino));
      const auto* fn = reinterpret_cast<const FILE_NAME_ATTR*>(reinterpret_cast<const u8*>(a) + off);
      if (raw_bits(fn->file_name_type) != FILE_NAME_DOS) ++links;
      return false;
    });
    return std::max<uint32_t>(links, 1);
  }

  // Caller holds lib_mutex_. Directory, regular file or symlink, and the target.
  InodeInfo inspect(uint64_t ino, ntfs_inode* ni) {
    InodeInfo info;
    const bool is_dir = (ni->mrec->flags & MFT_RECORD_IS_DIRECTORY) != 0;
    info.kind = is_dir ? Kind::directory : Kind::regular;
    if (raw_bits(ni->flags) & le32_to_cpu(FILE_ATTR_REPARSE_POINT)) {
      auto value = read_attribute(ni, ino, AT_REPARSE_POINT, AT_UNNAMED, 0, kMaxReparseData, "reparse point");
      if (value) {
        auto reparse = ntfs::parse_reparse(*value);
        if (!reparse) throw Error(EIO, "reparse point too short", where(ino));
        info.reparse_tag = reparse->tag;
        if (ntfs::is_symlink_tag(reparse->tag)) {
          if (!reparse->symlink_target)
            throw Error(EIO, "malformed symbolic link or junction (tag 0x" + hex(reparse->tag) + ")", where(ino));
          info.kind = Kind::symlink;
          info.symlink_target = std::move(*reparse->symlink_target);
        }
      }
    } else if (!is_dir && (raw_bits(ni->flags) & le32_to_cpu(FILE_ATTR_SYSTEM)) && ni->data_size >= 10 && ni->data_size <= kMaxInterixSymlink) {
      // Interix symlinks (what ntfs-3g writes for `ln -s`): a small SYSTEM
      // file whose data starts with the magic.
      auto data = read_attribute(ni, ino, AT_DATA, AT_UNNAMED, 0, kMaxInterixSymlink, "data");
      if (data) {
        if (auto target = ntfs::parse_interix_symlink(*data); target && !target->empty()) {
          info.kind = Kind::symlink;
          info.symlink_target = std::move(*target);
        }
      }
    }
    return info;
  }

  static std::string hex(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", v);
    return buf;
  }

  // Caller holds lib_mutex_.
  Attr to_attr(uint64_t ino, ntfs_inode* ni, const InodeInfo& info) {
    Attr a;
    a.ino = ino;
    a.generation = le16_to_cpu(ni->mrec->sequence_number);
    a.uid = options_.ntfs_uid;
    a.gid = options_.ntfs_gid;
    a.atime = to_timespec(ni->last_access_time);
    a.mtime = to_timespec(ni->last_data_change_time);
    a.ctime = to_timespec(ni->last_mft_change_time);
    a.nlink = link_count(ni, ino);
    switch (info.kind) {
      case Kind::symlink:
        a.mode = S_IFLNK | 0777;
        a.size = info.symlink_target.size();
        break;
      case Kind::directory: {
        a.mode = S_IFDIR | (options_.ntfs_dir_mode & 07777);
        errno = 0;
        AttrPtr na(ntfs_attr_open(ni, AT_INDEX_ALLOCATION, NTFS_INDEX_I30, 4));
        if (!na) na.reset(ntfs_attr_open(ni, AT_INDEX_ROOT, NTFS_INDEX_I30, 4));
        if (na) {
          a.size = static_cast<uint64_t>(std::max<s64>(0, na->data_size));
          a.blocks = static_cast<uint64_t>(std::max<s64>(0, na->allocated_size)) / 512;
        }
        break;
      }
      case Kind::regular: {
        a.mode = S_IFREG | (options_.ntfs_file_mode & 07777);
        errno = 0;
        AttrPtr na(ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0));
        if (!na && errno != ENOENT) throw library_error("cannot open $DATA", ino);
        if (na) {
          if (na->data_size < 0) throw Error(EIO, "negative data size", where(ino));
          a.size = static_cast<uint64_t>(na->data_size);
          const bool packed = (na->data_flags & (ATTR_IS_COMPRESSED | ATTR_IS_SPARSE)) != 0;
          const s64 allocated = packed ? na->compressed_size : na->allocated_size;
          a.blocks = static_cast<uint64_t>(std::max<s64>(0, allocated)) / 512;
        }
        break;
      }
    }
    return a;
  }

  // Caller holds lib_mutex_.
  std::vector<RawEntry> read_directory(uint64_t dir) {
    InodePtr ni = open_inode(dir);
    if (!(ni->mrec->flags & MFT_RECORD_IS_DIRECTORY)) throw Error(ENOTDIR, "not a directory", where(dir));
    struct Ctx {
      NtfsFilesystem* self;
      uint64_t dir;
      std::vector<RawEntry> entries;
      ListingCap cap;
      std::exception_ptr error;
    } ctx{this, dir, {}, ListingCap(options_.max_listing_bytes), nullptr};
    auto filldir = [](void* data, const ntfschar* name, const int name_len, const int name_type, const s64,
                      const MFT_REF mref, const unsigned dt_type) -> int {
      auto* c = static_cast<Ctx*>(data);
      try {
        if (name_type == FILE_NAME_DOS) return 0;  // the 8.3 alias of a name listed anyway
        const uint64_t record = MREF(mref);
        std::string shown = ntfs::utf16le_to_utf8(name, static_cast<size_t>(std::max(name_len, 0)));
        const bool dots = shown == "." || shown == "..";
        if (!dots && record < FILE_first_user) return 0;  // metafiles ($MFT, $Bitmap, $Extend, ...)
        c->cap.add(shown);
        if (record > kMaxInode)
          log::warn("ntfs_entry_refused", {{"volume", c->self->name_},
                                           {"directory", std::to_string(c->dir)},
                                           {"name", shown},
                                           {"reason", "MFT record number beyond 2^40"}});
        uint32_t type = 0;
        if (dt_type == NTFS_DT_DIR) type = S_IFDIR;
        else if (dt_type == NTFS_DT_REG) type = S_IFREG;
        else if (dt_type == NTFS_DT_LNK) type = S_IFLNK;
        c->entries.push_back(RawEntry{std::move(shown), mref, type});
      } catch (...) {
        c->error = std::current_exception();
        return -1;
      }
      return 0;
    };
    s64 pos = 0;
    errno = 0;
    const int rc = ntfs_readdir(ni.get(), &pos, &ctx, filldir);
    if (ctx.error) {
      try {
        std::rethrow_exception(ctx.error);
      } catch (const Error& e) {
        throw Error(e.code(), e.message(), where(dir));
      }
    }
    if (rc != 0) throw library_error("cannot read directory index", dir);
    return std::move(ctx.entries);
  }

  // Names whose record number is out of range are kept as refused: looking
  // one up is an error, not "no such file".
  std::shared_ptr<const DirIndex> dir_index(uint64_t dir) {
    return dir_indexes_.get(dir, [&] {
      std::vector<RawEntry> entries;
      {
        std::lock_guard lock(lib_mutex_);
        entries = read_directory(dir);
      }
      DirIndex index;
      index.names.reserve(entries.size());
      for (RawEntry& e : entries) {
        if (MREF(e.mref) > kMaxInode)
          index.refused.insert(std::move(e.name));
        else
          index.names.try_emplace(std::move(e.name), e.mref);  // first one wins
      }
      return index;
    });
  }

  // Caller holds lib_mutex_. Fills `file` for reading `ino`.
  void prepare(uint64_t ino, OpenFile& file) {
    InodePtr ni = open_inode(ino);
    const InodeInfo info = inspect(ino, ni.get());
    if (info.kind == Kind::directory) throw Error(EISDIR, "is a directory", where(ino));
    if (info.kind == Kind::symlink) throw Error(EINVAL, "a symbolic link has no data to read", where(ino));
    if (raw_bits(ni->flags) & le32_to_cpu(FILE_ATTR_ENCRYPTED))
      throw Error(EACCES, "encrypted file (EFS): reading it is not supported", where(ino));
    if (info.reparse_tag != 0) {
      if (auto what = ntfs::dataless_tag_name(info.reparse_tag))
        throw Error(EIO, "data is not in this volume: held by " + *what + " (reparse tag 0x" + hex(info.reparse_tag) +
                             ")",
                    where(ino));
    }
    file.ino = ino;
    errno = 0;
    AttrPtr na(ntfs_attr_open(ni.get(), AT_DATA, AT_UNNAMED, 0));
    if (!na) {
      if (errno != ENOENT) throw library_error("cannot open $DATA", ino);
      file.direct = true;  // no data attribute: an empty file
      return;
    }
    if (na->data_size < 0 || na->initialized_size < 0) throw Error(EIO, "negative data size", where(ino));
    file.size = static_cast<uint64_t>(na->data_size);
    file.initialized = std::min<uint64_t>(static_cast<uint64_t>(na->initialized_size), file.size);
    if (na->data_flags & ATTR_IS_ENCRYPTED)
      throw Error(EACCES, "encrypted data stream (EFS): reading it is not supported", where(ino));
    const bool plain = NAttrNonResident(na.get()) && !(na->data_flags & ATTR_COMPRESSION_MASK);
    if (plain) {
      map_runs(ino, na.get(), file);
      file.direct = true;
      return;
    }
    // Resident or compressed: the library reads it (under the lock).
    file.na = na.release();
    file.ni = ni.release();
  }

  // Caller holds lib_mutex_. Copies and checks the attribute's runlist.
  void map_runs(uint64_t ino, ntfs_attr* na, OpenFile& file) {
    if (ntfs_attr_map_whole_runlist(na) != 0) throw library_error("cannot map the runlist", ino);
    const uint64_t cluster = vol_->cluster_size;
    const uint64_t clusters_needed = file.size / cluster + (file.size % cluster != 0);
    const uint64_t total = static_cast<uint64_t>(vol_->nr_clusters);
    uint64_t next_vcn = 0;
    for (const runlist_element* rl = na->rl; rl != nullptr && rl->length != 0; ++rl) {
      if (rl->length < 0 || rl->vcn < 0 || static_cast<uint64_t>(rl->vcn) != next_vcn)
        throw Error(EIO, "runlist out of order at VCN " + std::to_string(rl->vcn), where(ino));
      const uint64_t length = static_cast<uint64_t>(rl->length);
      if (rl->lcn >= 0) {
        const uint64_t lcn = static_cast<uint64_t>(rl->lcn);
        if (lcn > total || length > total - lcn)
          throw Error(EIO,
                      "run at cluster " + std::to_string(lcn) + "+" + std::to_string(length) +
                          " lies outside the volume of " + std::to_string(total) + " clusters",
                      where(ino));
      } else if (rl->lcn != LCN_HOLE) {
        if (next_vcn >= clusters_needed) break;  // unmapped tail past the data: never read
        throw Error(EIO, "runlist has an unmapped run at VCN " + std::to_string(rl->vcn), where(ino));
      }
      if (next_vcn < clusters_needed) {
        if (file.runs.size() >= kMaxRuns) throw Error(EIO, "too many runs", where(ino));
        file.runs.push_back(Run{next_vcn, rl->lcn, length});
      }
      next_vcn += length;
      if (next_vcn > (1ull << 62) / cluster) throw Error(EIO, "runlist longer than any volume", where(ino));
    }
    if (next_vcn < clusters_needed)
      throw Error(EIO, "runlist covers " + std::to_string(next_vcn) + " clusters, the data needs " +
                           std::to_string(clusters_needed), where(ino));
    file.runs.shrink_to_fit();
  }

  // No lock: the run list is immutable and the device is thread-safe.
  void read_runs(const OpenFile& file, uint64_t offset, std::span<std::byte> out) const {
    const uint64_t cs = vol_->cluster_size;
    auto it = std::upper_bound(file.runs.begin(), file.runs.end(), offset / cs,
                               [](uint64_t vcn, const Run& r) { return vcn < r.vcn + r.length; });
    uint64_t pos = offset;
    size_t done = 0;
    while (done < out.size()) {
      if (it == file.runs.end()) throw Error(EIO, "read past the runlist", where(file.ino));
      const uint64_t want_end = offset + out.size();
      const uint64_t run_end = (it->vcn + it->length) * cs;
      const size_t n = static_cast<size_t>(std::min(want_end, run_end) - pos);
      if (it->lcn < 0) {
        std::fill_n(out.begin() + static_cast<ptrdiff_t>(done), n, std::byte{0});  // sparse
      } else {
        const uint64_t device_offset = static_cast<uint64_t>(it->lcn) * cs + (pos - it->vcn * cs);
        try {
          device_->read_at(device_offset, out.subspan(done, n));
        } catch (const Error& e) {
          throw Error(e.code(), e.what(), where(file.ino));
        }
      }
      pos += n;
      done += n;
      ++it;
    }
  }

  // Caller holds lib_mutex_.
  static void close_library_handles(OpenFile& file) {
    if (file.na != nullptr) ntfs_attr_close(file.na);
    if (file.ni != nullptr) ntfs_inode_close(file.ni);
    file.na = nullptr;
    file.ni = nullptr;
  }

  const BlockDevicePtr device_;
  const std::string name_;
  const FsOpenOptions options_;
  JournalReport journal_;

  // One lock for the whole process, not per volume: libntfs-3g keeps
  // process-wide state (its log handler, locale-dependent name conversion,
  // caches we have not audited), so two volumes must not call it at once
  // either. Plain file data is read without it (see the top of this file).
  std::mutex& lib_mutex_ = library_mutex();
  // Declared before vol_'s users: it outlives the volume (see ntfs_device.h).
  std::unique_ptr<ntfs::BlockDeviceNtfsDevice> device_holder_;
  ntfs_volume* vol_ = nullptr;
  bool free_space_known_ = false;

  std::shared_mutex handles_mutex_;
  std::unordered_map<uint64_t, std::shared_ptr<OpenFile>> handles_;
  uint64_t next_handle_ = 1;

  DirIndexCache dir_indexes_;
};

}  // namespace

FilesystemPtr open_ntfs_filesystem(BlockDevicePtr device, const std::string& name, const FsOpenOptions& options) {
  if (!device) throw Error(EINVAL, "no device", name);
  return std::make_shared<NtfsFilesystem>(std::move(device), name, options);
}

}  // namespace sendense
