// ext2/ext3/ext4 over libext2fs (see ext_filesystem.h).
//
// Locks (only the caches' own locks and the backup's cache budget's are
// ever taken inside another, under lib_mutex_ when a map or a metadata
// block is stored; they call nothing out, so there is no order to get
// wrong):
//   lib_mutex_     every libext2fs call on fs_ (the library is not thread-safe)
//   handles_       the table of open files (its own mutex)
//   dir_indexes_   the per-directory name cache (its own mutex, as maps_)
//   maps_          the file-map cache (its own mutex; taken under lib_mutex_
//                  when a new map is stored)
// File data never takes lib_mutex_: a file's blocks are mapped once into an
// immutable FileMap, kept in a bounded cache shared by every open() of the
// inode, and read() goes straight to the BlockDevice.
#include "readers/fs/ext/ext_filesystem.h"

extern "C" {  // com_err.h has no C++ guards
#include <et/com_err.h>
}
#include <ext2fs/ext2fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <list>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "readers/common/error.h"
#include "readers/common/handle_table.h"
#include "readers/common/log.h"
#include "readers/fs/ext/block_device_io_manager.h"
#include "readers/fs/ext/ext_cache_stats.h"
#include "readers/fs/ext/ext_journal.h"
#include "readers/common/shared_lru.h"
#include "readers/fs/block_runs.h"
#include "readers/fs/dir_index.h"
#include "readers/fs/listing_cap.h"
#include "readers/volume/volume.h"

namespace sendense {

namespace {

// Limits against hostile metadata: each one is far above what a real
// filesystem needs and far below what would exhaust memory.
constexpr uint64_t kMaxSymlinkLength = 4096;           // PATH_MAX
constexpr uint64_t kMaxInlineData = 64 * 1024;         // inline data lives in the inode
constexpr size_t kMaxRuns = 8u << 20;                  // ~200 MiB of run table per file
constexpr size_t kMapCacheFiles = 256;                 // files whose run maps are kept after release()
constexpr size_t kMapCacheBytes = 6u << 20;            // their runs, per volume (and within the backup's budget)

// The one translation of libext2fs error codes to errno. Plain errno values
// (our io_manager returns some) pass through. Everything that means "the
// metadata is not what it should be" is EIO: an image is guest data.
int errno_from_ext2(errcode_t err) {
  if (err > 0 && err < 256) return static_cast<int>(err);
  switch (err) {
    case 0:
      return 0;
    case EXT2_ET_NO_MEMORY:
    case EXT2_ET_TDB_ERR_OOM:
      return ENOMEM;
    case EXT2_ET_INVALID_ARGUMENT:
    case EXT2_ET_LLSEEK_FAILED:
      return EINVAL;
    case EXT2_ET_NO_DIRECTORY:
      return ENOTDIR;
    case EXT2_ET_FILE_NOT_FOUND:
    case EXT2_ET_BAD_INODE_NUM:
      return ENOENT;
    case EXT2_ET_EA_KEY_NOT_FOUND:
      return ENODATA;
    case EXT2_ET_RO_FILSYS:
    case EXT2_ET_FILE_RO:
    case EXT2_ET_RO_BLOCK_ITERATE:
    case EXT2_ET_TDB_ERR_RDONLY:
      return EROFS;
    case EXT2_ET_DIR_NO_SPACE:
    case EXT2_ET_TOOSMALL:
    case EXT2_ET_BLOCK_ALLOC_FAIL:
    case EXT2_ET_INODE_ALLOC_FAIL:
    case EXT2_ET_EA_NO_SPACE:
      return ENOSPC;
    case EXT2_ET_SYMLINK_LOOP:
      return ELOOP;
    case EXT2_ET_FILE_TOO_BIG:
      return EFBIG;
    case EXT2_ET_TDB_ERR_EXISTS:
    case EXT2_ET_FILE_EXISTS:
    case EXT2_ET_DIR_EXISTS:
      return EEXIST;
    case EXT2_ET_MMP_FAILED:
    case EXT2_ET_MMP_FSCK_ON:
      return EBUSY;
    case EXT2_ET_UNIMPLEMENTED:
    case EXT2_ET_OP_NOT_SUPPORTED:
    case EXT2_ET_EXTENT_NOT_SUPPORTED:
      return EOPNOTSUPP;
    default:  // corruption, checksum failures, short reads, bad magic numbers
      return EIO;
  }
}

std::string ext2_message(errcode_t err) { return error_message(err); }

uint32_t get_le(const unsigned char* p, size_t bytes) {
  uint32_t v = 0;
  for (size_t i = bytes; i-- > 0;) v = (v << 8) | p[i];
  return v;
}

void put_le(std::string& out, uint32_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i, v >>= 8) out.push_back(static_cast<char>(v & 0xff));
}

// A POSIX ACL from the ext4 on-disk format (version 1; short entries for the
// owner/group/mask/other tags) to the VFS xattr format getxattr(2) returns
// (version 2; every entry 8 bytes, ACL_UNDEFINED_ID where there is no id).
// libext2fs has a converter, but it writes id 0 instead of ACL_UNDEFINED_ID.
// Returns nullopt if the value is malformed.
std::optional<std::string> acl_disk_to_vfs(std::string_view disk) {
  constexpr uint32_t kUndefinedId = 0xffffffffu;
  const auto* p = reinterpret_cast<const unsigned char*>(disk.data());
  size_t left = disk.size();
  if (left < 4 || get_le(p, 4) != 1) return std::nullopt;
  p += 4;
  left -= 4;
  std::string out;
  put_le(out, 2, 4);
  while (left > 0) {
    if (left < 4) return std::nullopt;
    const uint32_t tag = get_le(p, 2);
    const uint32_t perm = get_le(p + 2, 2);
    uint32_t id = kUndefinedId;
    switch (tag) {
      case 0x01:  // ACL_USER_OBJ
      case 0x04:  // ACL_GROUP_OBJ
      case 0x10:  // ACL_MASK
      case 0x20:  // ACL_OTHER
        p += 4;
        left -= 4;
        break;
      case 0x02:  // ACL_USER
      case 0x08:  // ACL_GROUP
        if (left < 8) return std::nullopt;
        id = get_le(p + 4, 4);
        p += 8;
        left -= 8;
        break;
      default:
        return std::nullopt;
    }
    put_le(out, tag, 2);
    put_le(out, perm, 2);
    put_le(out, id, 4);
  }
  return out;
}

bool is_acl_name(std::string_view name) {
  return name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

uint32_t type_from_dirent(int ft) {
  switch (ft) {
    case EXT2_FT_REG_FILE: return S_IFREG;
    case EXT2_FT_DIR: return S_IFDIR;
    case EXT2_FT_CHRDEV: return S_IFCHR;
    case EXT2_FT_BLKDEV: return S_IFBLK;
    case EXT2_FT_FIFO: return S_IFIFO;
    case EXT2_FT_SOCK: return S_IFSOCK;
    case EXT2_FT_SYMLINK: return S_IFLNK;
    default: return 0;
  }
}

// Timestamps: seconds are signed 32-bit; large inodes extend them with an
// *_extra field (low 2 bits: epoch, the rest: nanoseconds).
timespec decode_time(uint32_t seconds, const uint32_t* extra) {
  timespec t{};
  int64_t sec = static_cast<int32_t>(seconds);
  long nsec = 0;
  if (extra != nullptr) {
    sec += static_cast<int64_t>(*extra & 3u) << 32;
    nsec = static_cast<long>(*extra >> 2);
    if (nsec > 999'999'999) nsec = 999'999'999;
  }
  t.tv_sec = static_cast<time_t>(sec);
  t.tv_nsec = nsec;
  return t;
}

}  // namespace

namespace ext {

// The raw superblock, checked before libext2fs sees it. ext2fs_open2 sizes
// its group descriptor array (desc_blocks * block size, from blocks_count,
// first_data_block, blocks_per_group and desc_size) and ext2fs_check_desc
// its bitmaps (from blocks_count) before anything compares them with the
// device: a crafted superblock of a few bytes could ask for gigabytes. So
// every field those sizes come from is bounded here by the device and by
// what mke2fs and the kernel accept. Offsets: e2fsprogs lib/ext2fs/ext2_fs.h.
void check_superblock(const BlockDevice& device, const std::string& name) {
  constexpr uint64_t kOffset = 1024;
  unsigned char sb[1024];
  const uint64_t device_size = device.size();
  if (device_size < kOffset + sizeof sb)
    throw Error(EIO, "device of " + std::to_string(device_size) + " bytes is too small for an ext superblock", name);
  device.read_at(kOffset, std::as_writable_bytes(std::span(sb)));
  auto fail = [&](const std::string& what) { throw Error(EIO, "bad ext superblock: " + what, name); };
  auto field = [&](size_t offset, size_t bytes) { return get_le(sb + offset, bytes); };

  if (field(56, 2) != EXT2_SUPER_MAGIC) fail("bad magic number");
  const uint32_t rev_level = field(76, 4);
  if (rev_level > EXT2_DYNAMIC_REV) fail("revision " + std::to_string(rev_level));
  const uint32_t incompat = field(96, 4);
  const uint32_t ro_compat = field(100, 4);
  if (incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV) fail("an external journal device, not a filesystem");

  const uint32_t log_block = field(24, 4);
  if (log_block > 6) fail("block size 2^" + std::to_string(log_block) + " KiB");  // 64 KiB at most
  const uint64_t block_size = 1024u << log_block;
  const uint32_t log_cluster = field(28, 4);
  const bool bigalloc = (ro_compat & EXT4_FEATURE_RO_COMPAT_BIGALLOC) != 0;
  if (bigalloc ? (log_cluster < log_block || log_cluster > EXT2_MAX_CLUSTER_LOG_SIZE - EXT2_MIN_CLUSTER_LOG_SIZE)
               : log_cluster != log_block)
    fail("cluster size 2^" + std::to_string(log_cluster) + " KiB");
  if (field(372, 1) > 31) fail("log_groups_per_flex " + std::to_string(field(372, 1)));

  uint64_t blocks = field(4, 4);
  if (incompat & EXT4_FEATURE_INCOMPAT_64BIT) blocks |= static_cast<uint64_t>(field(336, 4)) << 32;
  if (blocks == 0 || blocks > device_size / block_size)
    fail("filesystem of " + std::to_string(blocks) + " blocks of " + std::to_string(block_size) +
         " bytes does not fit its device of " + std::to_string(device_size) + " bytes (truncated image?)");
  const uint32_t first_data_block = field(20, 4);
  if (first_data_block >= blocks) fail("first data block " + std::to_string(first_data_block) + " is past the end");

  // One bitmap block covers a group: at most 8 * block size clusters/inodes.
  const uint32_t blocks_per_group = field(32, 4);
  const uint32_t clusters_per_group = field(36, 4);
  const uint64_t bitmap_bits = 8 * block_size;
  // mke2fs makes no group smaller than 256 blocks (unless the whole
  // filesystem is): tiny groups only serve to inflate the descriptor table.
  if (blocks_per_group < std::min<uint64_t>(256, blocks) || (bigalloc ? clusters_per_group > bitmap_bits ||
                                              (static_cast<uint64_t>(clusters_per_group) << (log_cluster - log_block)) !=
                                                  blocks_per_group
                                        : blocks_per_group > bitmap_bits))
    fail("blocks per group " + std::to_string(blocks_per_group));
  const uint32_t inodes_per_group = field(40, 4);
  if (inodes_per_group == 0 || inodes_per_group > bitmap_bits)
    fail("inodes per group " + std::to_string(inodes_per_group));
  const uint64_t inode_size = rev_level == EXT2_GOOD_OLD_REV ? EXT2_GOOD_OLD_INODE_SIZE : field(88, 2);
  if (inode_size < EXT2_GOOD_OLD_INODE_SIZE || inode_size > block_size || (inode_size & (inode_size - 1)) != 0)
    fail("inode size " + std::to_string(inode_size));

  const uint64_t groups = (blocks - first_data_block + blocks_per_group - 1) / blocks_per_group;
  if (groups > UINT32_MAX || groups * inodes_per_group != field(0, 4))
    fail("inodes count " + std::to_string(field(0, 4)) + " is not " + std::to_string(groups) + " groups of " +
         std::to_string(inodes_per_group));

  uint64_t desc_size = EXT2_MIN_DESC_SIZE;
  if (incompat & EXT4_FEATURE_INCOMPAT_64BIT) {
    // libext2fs and the kernel want at least 64 bytes with 64bit.
    desc_size = field(254, 2);
    if (desc_size < EXT2_MIN_DESC_SIZE_64BIT || desc_size > EXT2_MAX_DESC_SIZE || (desc_size & (desc_size - 1)) != 0)
      fail("group descriptor size " + std::to_string(desc_size));
  }
  // The descriptor table libext2fs allocates and reads. Each group holds at
  // least 256 blocks when mke2fs makes it and a descriptor is at most 1 KiB,
  // so a real table is at most 1/256 of the filesystem; a superblock claiming
  // tiny groups on a large (thin) device is refused before it costs memory.
  const uint64_t desc_blocks = (groups + block_size / desc_size - 1) / (block_size / desc_size);
  if (desc_blocks > 1 && desc_blocks > blocks / 256)
    fail(std::to_string(groups) + " groups need " + std::to_string(desc_blocks) +
         " descriptor blocks, too many for " + std::to_string(blocks) + " blocks");
  // However large a (thin) device claims to be, the table libext2fs
  // allocates is capped: 128 MiB covers 256 TiB of 4 KiB blocks.
  constexpr uint64_t kMaxDescTableBytes = 128u << 20;
  if (desc_blocks * block_size > kMaxDescTableBytes)
    fail("a group descriptor table of " + std::to_string(desc_blocks * block_size) + " bytes (limit " +
         std::to_string(kMaxDescTableBytes) + ")");
  if ((incompat & EXT2_FEATURE_INCOMPAT_META_BG) && field(260, 4) > desc_blocks)
    fail("first_meta_bg " + std::to_string(field(260, 4)) + " is past the descriptor table");
}

}  // namespace ext

namespace {

struct Ext2fsCloser {
  void operator()(ext2_filsys fs) const {
    if (fs != nullptr) ext2fs_close_free(&fs);
  }
};
using FsHandle = std::unique_ptr<struct_ext2_filsys, Ext2fsCloser>;

// A file's data, mapped once: logical block -> physical block runs, sorted
// and non-overlapping; or the bytes of an inline-data file.
struct FileMap {
  uint64_t ino = 0;
  uint64_t size = 0;
  bool is_inline = false;
  std::string inline_data;
  std::vector<BlockRun> runs;
};

// name -> inode of one directory, for lookup.
class ExtFilesystem final : public Filesystem {
 public:
  ExtFilesystem(BlockDevicePtr device, std::string name, JournalReport journal, const FsOpenOptions& options)
      : device_(std::move(device)),
        name_(std::move(name)),
        journal_(std::move(journal)),
        max_listing_bytes_(options.max_listing_bytes),
        budget_(options.cache_budget),
        maps_(kMapCacheFiles, kMapCacheBytes, options.cache_budget),
        dir_indexes_(options.cache_budget) {
    open_library();
  }

  uint64_t root_ino() const override { return EXT2_ROOT_INO; }
  std::string type_name() const override { return type_; }

  Attr getattr(uint64_t ino) override {
    std::lock_guard lock(lib_mutex_);
    return to_attr(ino, read_inode(ino));
  }

  std::optional<Attr> lookup(uint64_t dir, std::string_view name) override {
    if (name.empty() || name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
      return std::nullopt;
    std::shared_ptr<const DirIndex> index = dir_index(dir);
    auto it = index->names.find(std::string(name));
    if (it == index->names.end()) return std::nullopt;
    try {
      return getattr(it->second);
    } catch (const Error& e) {
      if (e.code() != ENOENT) throw;
      // The directory names an inode that does not exist: damaged metadata.
      throw Error(EIO, "directory entry '" + std::string(name) + "' names unused inode " + std::to_string(it->second),
                  where(dir));
    }
  }

  std::vector<DirEntry> readdir(uint64_t dir) override {
    std::lock_guard lock(lib_mutex_);
    return read_directory(dir);
  }

  std::string readlink(uint64_t ino) override {
    std::lock_guard lock(lib_mutex_);
    ext2_inode_large inode = read_inode(ino);
    if (!LINUX_S_ISLNK(inode.i_mode)) throw Error(EINVAL, "not a symbolic link", where(ino));
    const uint64_t size = EXT2_I_SIZE(&inode);
    if (size > kMaxSymlinkLength)
      throw Error(EIO, "symbolic link of " + std::to_string(size) + " bytes", where(ino));
    if (inode.i_flags & EXT4_INLINE_DATA_FL) {
      std::string data = read_inline_data(ino, inode);
      if (data.size() < size) throw Error(EIO, "inline symbolic link shorter than its size", where(ino));
      data.resize(size);
      return data;
    }
    if (ext2fs_is_fast_symlink(reinterpret_cast<ext2_inode*>(&inode))) {
      if (size > sizeof(inode.i_block)) throw Error(EIO, "fast symbolic link longer than i_block", where(ino));
      return std::string(reinterpret_cast<const char*>(inode.i_block), size);
    }
    // A slow symlink: its target lives in a data block.
    ext2_file_t file = nullptr;
    check(ext2fs_file_open2(fs_.get(), static_cast<ext2_ino_t>(ino), reinterpret_cast<ext2_inode*>(&inode), 0, &file),
          "cannot open symbolic link", ino);
    std::string target(size, '\0');
    unsigned int got = 0;
    errcode_t err = ext2fs_file_read(file, target.data(), static_cast<unsigned int>(size), &got);
    ext2fs_file_close(file);
    check(err, "cannot read symbolic link", ino);
    if (got != size) throw Error(EIO, "symbolic link target is short", where(ino));
    return target;
  }

  uint64_t open(uint64_t ino) override {
    std::shared_ptr<const FileMap> map = file_map(ino);
    return handles_.add(std::move(map));
  }

  size_t read(uint64_t handle, uint64_t offset, std::span<std::byte> buf) override {
    const std::shared_ptr<const FileMap> map = opened(handle);
    if (offset >= map->size) return 0;
    const size_t count = static_cast<size_t>(std::min<uint64_t>(buf.size(), map->size - offset));
    if (map->is_inline) {
      std::fill_n(buf.begin(), count, std::byte{0});
      if (offset < map->inline_data.size()) {
        const size_t n = std::min<size_t>(count, map->inline_data.size() - offset);
        std::memcpy(buf.data(), map->inline_data.data() + offset, n);
      }
      return count;
    }
    read_runs(*map, offset, buf.first(count));
    return count;
  }

  void release(uint64_t handle) override {
    handles_.take(handle);
  }

  std::optional<std::vector<Extent>> map_read(uint64_t handle, uint64_t offset, size_t size) override {
    const std::shared_ptr<const FileMap> map = opened(handle);
    if (map->is_inline) return std::nullopt;
    if (offset >= map->size) return std::vector<Extent>{};
    return map_block_runs(*device_, map->runs, block_size_, offset, std::min<uint64_t>(size, map->size - offset),
                          kMaxReadExtents);
  }

  std::optional<std::vector<Extent>> map_file(uint64_t ino, size_t max_extents) override {
    const std::shared_ptr<const FileMap> map = file_map(ino);
    if (map->is_inline) return std::nullopt;
    return map_block_runs(*device_, map->runs, block_size_, 0, map->size, max_extents);
  }

  std::vector<std::string> listxattr(uint64_t ino) override {
    std::lock_guard lock(lib_mutex_);
    std::vector<std::string> names;
    with_xattrs(ino, [&](ext2_xattr_handle* h) {
      struct Ctx {
        std::vector<std::string>* names;
      } ctx{&names};
      auto cb = [](char* name, char*, size_t, void* data) -> int {
        auto* c = static_cast<Ctx*>(data);
        try {
          if (listed_xattr_name(name)) c->names->emplace_back(name);  // not "system.data" (inline data)
        } catch (...) {
          return XATTR_ABORT;
        }
        return 0;
      };
      check(ext2fs_xattrs_iterate(h, cb, &ctx), "cannot list extended attributes", ino);
    });
    return names;
  }

  std::optional<std::string> getxattr(uint64_t ino, std::string_view name) override {
    const std::string key(name);
    if (!listed_xattr_name(key)) {
      // Still check the inode so a bad ino is ENOENT, not "no attribute".
      std::lock_guard lock(lib_mutex_);
      read_inode(ino);
      return std::nullopt;
    }
    std::lock_guard lock(lib_mutex_);
    std::optional<std::string> result;
    with_xattrs(ino, [&](ext2_xattr_handle* h) {
      void* value = nullptr;
      size_t length = 0;
      errcode_t err = ext2fs_xattr_get(h, key.c_str(), &value, &length);
      if (err == EXT2_ET_EA_KEY_NOT_FOUND) return;
      check(err, "cannot read extended attribute " + key, ino);
      try {
        result.emplace(static_cast<const char*>(value), length);
      } catch (...) {
        ext2fs_free_mem(&value);
        throw;
      }
      ext2fs_free_mem(&value);
    });
    if (result && is_acl_name(key)) {
      std::optional<std::string> vfs = acl_disk_to_vfs(*result);
      if (!vfs) throw Error(EIO, "malformed " + key, where(ino));
      return vfs;
    }
    return result;
  }

  FsStat statfs() override {
    std::lock_guard lock(lib_mutex_);
    ext2_super_block* sb = fs_->super;
    FsStat st;
    st.block_size = fs_->blocksize;
    st.blocks = ext2fs_blocks_count(sb);
    st.blocks_free = ext2fs_free_blocks_count(sb);
    st.files = sb->s_inodes_count;
    st.files_free = sb->s_free_inodes_count;
    st.name_max = EXT2_NAME_LEN;
    return st;
  }

  JournalReport journal() const override { return journal_; }

  ext::SharedLru<FileMap>::Stats map_cache_stats() const { return maps_.stats(); }

 private:
  std::string where(uint64_t ino) const { return name_ + " inode " + std::to_string(ino); }

  void check(errcode_t err, const std::string& what, uint64_t ino) const {
    if (err != 0) throw Error(errno_from_ext2(err), what + ": " + ext2_message(err), where(ino));
  }

  void open_library() {
    static std::once_flag error_table;
    std::call_once(error_table, [] { initialize_ext2_error_table(); });  // for error_message()
    ext::check_superblock(*device_, name_);
    // libext2fs reads its metadata one block at a time, often the same inode
    // table block for neighbouring inodes: give it a cache (file data goes
    // straight to device_). 32 KiB chunks, 8 MiB per volume at most.
    ext::DeviceRegistration registration(make_block_cache(device_, 32 * 1024, 256, budget_));
    ext2_filsys raw = nullptr;
    // Read-only (no EXT2_FLAG_RW), so nothing is written (a journal was
    // replayed in memory below device_, if at all); SKIP_MMP because MMP
    // would update its block.
    const int flags = EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP;
    errcode_t err = ext2fs_open2(registration.name().c_str(), nullptr, flags, 0, 0, ext::block_device_io_manager(), &raw);
    if (err != 0) {
      if (raw != nullptr) ext2fs_free(raw);
      throw Error(err == EXT2_ET_NO_MEMORY ? ENOMEM : EIO, "cannot open ext filesystem: " + ext2_message(err), name_);
    }
    fs_.reset(raw);
    err = ext2fs_check_desc(fs_.get());
    if (err != 0) throw Error(EIO, "damaged group descriptors: " + ext2_message(err), name_);
    const uint64_t fs_bytes = ext2fs_blocks_count(fs_->super) * static_cast<uint64_t>(fs_->blocksize);
    if (ext2fs_blocks_count(fs_->super) > device_->size() / fs_->blocksize)
      throw Error(EIO, "filesystem of " + std::to_string(fs_bytes) + " bytes does not fit its device of " +
                           std::to_string(device_->size()) + " bytes (truncated image?)", name_);
    block_size_ = fs_->blocksize;
    fs_blocks_ = ext2fs_blocks_count(fs_->super);
    // The same classification as volume detection (journal_dev was refused above).
    const FsType type = classify_ext(fs_->super->s_feature_compat, fs_->super->s_feature_incompat,
                                     fs_->super->s_feature_ro_compat);
    if (type == FsType::unknown) throw Error(EIO, "not an ext filesystem", name_);
    type_ = to_string(type);
  }

  // The file's map: from the cache, or mapped now (once, however many
  // threads open it at the same time) and kept. Only regular files are
  // cached, so a hit needs no inode read: backups never change.
  std::shared_ptr<const FileMap> file_map(uint64_t ino) {
    if (auto cached = maps_.find(ino)) return cached;
    std::lock_guard lock(lib_mutex_);
    if (auto cached = maps_.find(ino)) return cached;  // mapped while we waited for the lock
    auto map = std::make_shared<FileMap>();
    ext2_inode_large inode = read_inode(ino);
    if (LINUX_S_ISDIR(inode.i_mode)) throw Error(EISDIR, "is a directory", where(ino));
    if (!LINUX_S_ISREG(inode.i_mode)) throw Error(EINVAL, "not a regular file", where(ino));
    map->ino = ino;
    map->size = checked_size(ino, inode);
    if (inode.i_flags & EXT4_INLINE_DATA_FL) {
      map->is_inline = true;
      map->inline_data = read_inline_data(ino, inode);
      if (map->inline_data.size() > map->size) map->inline_data.resize(map->size);
    } else if (inode.i_flags & EXT4_EXTENTS_FL) {
      map_extents(ino, inode, *map);
    } else {
      map_indirect(ino, inode, *map);
    }
    map->runs.shrink_to_fit();
    const size_t weight = sizeof(FileMap) + map->runs.size() * sizeof(BlockRun) + map->inline_data.size();
    return maps_.insert(ino, std::move(map), weight);
  }

  // Caller holds lib_mutex_.
  ext2_inode_large read_inode(uint64_t ino) {
    if (ino == 0 || ino > fs_->super->s_inodes_count) throw Error(ENOENT, "no such inode", where(ino));
    ext2_inode_large inode{};
    check(ext2fs_read_inode_full(fs_.get(), static_cast<ext2_ino_t>(ino), reinterpret_cast<ext2_inode*>(&inode),
                                 sizeof(inode)),
          "cannot read inode", ino);
    if (inode.i_links_count == 0) throw Error(ENOENT, "inode is not in use", where(ino));
    const unsigned inode_size = EXT2_INODE_SIZE(fs_->super);
    if (inode_size > EXT2_GOOD_OLD_INODE_SIZE &&
        (inode.i_extra_isize > inode_size - EXT2_GOOD_OLD_INODE_SIZE || (inode.i_extra_isize & 3) != 0))
      throw Error(EIO, "bad i_extra_isize " + std::to_string(inode.i_extra_isize), where(ino));
    if (inode_size <= EXT2_GOOD_OLD_INODE_SIZE) inode.i_extra_isize = 0;
    return inode;
  }

  // i_size and i_size_high are 64 bits a guest can set to anything; no
  // file is larger than off_t holds (the kernel would refuse the inode).
  uint64_t checked_size(uint64_t ino, const ext2_inode_large& inode) const {
    const uint64_t size = EXT2_I_SIZE(&inode);
    if (size > static_cast<uint64_t>(INT64_MAX))
      throw Error(EIO, "size " + std::to_string(size) + " larger than any file", where(ino));
    return size;
  }

  Attr to_attr(uint64_t ino, const ext2_inode_large& inode) {
    Attr a;
    a.ino = ino;
    a.mode = inode.i_mode;
    a.nlink = inode.i_links_count;
    a.uid = inode_uid(inode);
    a.gid = inode_gid(inode);
    a.size = checked_size(ino, inode);
    a.blocks = ext2fs_get_stat_i_blocks(fs_.get(), const_cast<ext2_inode*>(reinterpret_cast<const ext2_inode*>(&inode)));
    a.generation = inode.i_generation;
    if (LINUX_S_ISCHR(inode.i_mode) || LINUX_S_ISBLK(inode.i_mode)) {
      uint32_t major = 0;
      uint32_t minor = 0;
      if (inode.i_block[0] != 0) {  // old encoding: 8-bit major and minor
        major = (inode.i_block[0] >> 8) & 0xff;
        minor = inode.i_block[0] & 0xff;
      } else {  // new encoding: 12-bit major, 20-bit minor
        const uint32_t dev = inode.i_block[1];
        major = (dev & 0xfff00) >> 8;
        minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
      }
      a.rdev = makedev(major, minor);
    }
    // The *_extra fields exist when i_extra_isize covers them.
    const size_t extra_end = EXT2_GOOD_OLD_INODE_SIZE + inode.i_extra_isize;
    auto extra = [&](const uint32_t& field) -> const uint32_t* {
      const size_t offset = reinterpret_cast<const char*>(&field) - reinterpret_cast<const char*>(&inode);
      return offset + sizeof(uint32_t) <= extra_end ? &field : nullptr;
    };
    a.atime = decode_time(inode.i_atime, extra(inode.i_atime_extra));
    a.mtime = decode_time(inode.i_mtime, extra(inode.i_mtime_extra));
    a.ctime = decode_time(inode.i_ctime, extra(inode.i_ctime_extra));
    return a;
  }

  // Caller holds lib_mutex_.
  std::vector<DirEntry> read_directory(uint64_t dir) {
    ext2_inode_large inode = read_inode(dir);
    if (!LINUX_S_ISDIR(inode.i_mode)) throw Error(ENOTDIR, "not a directory", where(dir));
    struct Ctx {
      ExtFilesystem* self;
      std::vector<DirEntry> entries;
      ListingCap cap;
      bool filetype;
      std::exception_ptr error;
    } ctx{this, {}, ListingCap(max_listing_bytes_), ext2fs_has_feature_filetype(fs_->super) != 0, nullptr};
    auto cb = [](ext2_ino_t, int, ext2_dir_entry* dirent, int, int, char*, void* data) -> int {
      auto* c = static_cast<Ctx*>(data);
      try {
        DirEntry e;
        e.name.assign(dirent->name, static_cast<size_t>(ext2fs_dirent_name_len(dirent)));
        c->cap.add(e.name);
        e.ino = dirent->inode;
        if (c->filetype) {
          e.type = type_from_dirent(ext2fs_dirent_file_type(dirent));
        } else {
          try {
            e.type = c->self->read_inode(e.ino).i_mode & S_IFMT;
          } catch (const Error&) {
            e.type = 0;  // unknown; getattr on it reports the problem
          }
        }
        c->entries.push_back(std::move(e));
      } catch (...) {
        c->error = std::current_exception();
        return DIRENT_ABORT;
      }
      return 0;
    };
    errcode_t err = ext2fs_dir_iterate2(fs_.get(), static_cast<ext2_ino_t>(dir), 0, nullptr, cb, &ctx);
    if (ctx.error) {
      try {
        std::rethrow_exception(ctx.error);
      } catch (const Error& e) {
        throw Error(e.code(), e.message(), where(dir));
      }
    }
    check(err, "cannot read directory", dir);
    return std::move(ctx.entries);
  }

  std::shared_ptr<const DirIndex> dir_index(uint64_t dir) {
    return dir_indexes_.get(dir, [&] { return DirIndex::of(readdir(dir)); });
  }

  // Caller holds lib_mutex_. Returns the inline bytes (data of "system.data" appended).
  std::string read_inline_data(uint64_t ino, ext2_inode_large& inode) {
    size_t size = 0;
    check(ext2fs_inline_data_size(fs_.get(), static_cast<ext2_ino_t>(ino), &size), "cannot read inline data", ino);
    if (size > kMaxInlineData) throw Error(EIO, "inline data of " + std::to_string(size) + " bytes", where(ino));
    std::string data(std::max<size_t>(size, EXT4_MIN_INLINE_DATA_SIZE), '\0');
    size_t got = 0;
    check(ext2fs_inline_data_get(fs_.get(), static_cast<ext2_ino_t>(ino), reinterpret_cast<ext2_inode*>(&inode),
                                 data.data(), &got),
          "cannot read inline data", ino);
    data.resize(std::min(got, size));
    return data;
  }

  // Appends [logical, logical + length) -> physical to the map, checking it
  // against the device and merging with the previous run when contiguous.
  void add_run(FileMap& map, uint64_t logical, uint64_t physical, uint64_t length) {
    if (length == 0) return;
    if (physical < fs_->super->s_first_data_block || physical > fs_blocks_ ||
        length > fs_blocks_ - physical)
      throw Error(EIO, "block " + std::to_string(physical) + "+" + std::to_string(length) + " is outside the device",
                  where(map.ino));
    if (!map.runs.empty()) {
      BlockRun& last = map.runs.back();
      if (logical < last.logical + last.length)
        throw Error(EIO, "overlapping or unordered block mapping at logical block " + std::to_string(logical),
                    where(map.ino));
      if (last.logical + last.length == logical && last.physical + last.length == physical) {
        last.length += length;
        return;
      }
    }
    if (map.runs.size() >= kMaxRuns) throw Error(EIO, "too many extents", where(map.ino));
    map.runs.push_back(BlockRun{logical, physical, length});
  }

  uint64_t blocks_for(uint64_t size) const { return size / block_size_ + (size % block_size_ != 0); }

  // Caller holds lib_mutex_.
  void map_extents(uint64_t ino, ext2_inode_large& inode, FileMap& map) {
    ext2_extent_handle_t handle = nullptr;
    check(ext2fs_extent_open2(fs_.get(), static_cast<ext2_ino_t>(ino), reinterpret_cast<ext2_inode*>(&inode), &handle),
          "cannot read extent tree", ino);
    std::unique_ptr<std::remove_pointer_t<ext2_extent_handle_t>, void (*)(ext2_extent_handle_t)> guard(
        handle, ext2fs_extent_free);
    const uint64_t end_block = blocks_for(map.size);
    // Bounded walk: a tree whose index entries point back at shared blocks
    // could otherwise make the traversal exponential.
    uint64_t steps = 0;
    const uint64_t max_steps = 4 * static_cast<uint64_t>(kMaxRuns);
    int op = EXT2_EXTENT_ROOT;
    for (;;) {
      ext2fs_extent extent{};
      errcode_t err = ext2fs_extent_get(handle, op, &extent);
      if (err == EXT2_ET_EXTENT_NO_NEXT) break;
      check(err, "cannot read extent tree", ino);
      op = EXT2_EXTENT_NEXT;
      if (++steps > max_steps) throw Error(EIO, "extent tree too large", where(ino));
      if (!(extent.e_flags & EXT2_EXTENT_FLAGS_LEAF)) continue;
      if (extent.e_lblk >= end_block) continue;            // preallocated past EOF
      if (extent.e_flags & EXT2_EXTENT_FLAGS_UNINIT) continue;  // unwritten: reads as zeros
      const uint64_t length = std::min<uint64_t>(extent.e_len, end_block - extent.e_lblk);
      add_run(map, extent.e_lblk, extent.e_pblk, length);
    }
  }

  // Caller holds lib_mutex_.
  void map_indirect(uint64_t ino, ext2_inode_large&, FileMap& map) {
    struct Ctx {
      ExtFilesystem* self;
      FileMap* map;
      uint64_t end_block;
      std::exception_ptr error;
    } ctx{this, &map, blocks_for(map.size), nullptr};
    auto cb = [](ext2_filsys, blk64_t* blocknr, e2_blkcnt_t blockcnt, blk64_t, int, void* data) -> int {
      auto* c = static_cast<Ctx*>(data);
      if (blockcnt < 0) return 0;  // metadata block (not passed with DATA_ONLY)
      if (static_cast<uint64_t>(blockcnt) >= c->end_block) return BLOCK_ABORT;
      try {
        c->self->add_run(*c->map, static_cast<uint64_t>(blockcnt), *blocknr, 1);
      } catch (...) {
        c->error = std::current_exception();
        return BLOCK_ABORT;
      }
      return 0;
    };
    errcode_t err = ext2fs_block_iterate3(fs_.get(), static_cast<ext2_ino_t>(ino),
                                          BLOCK_FLAG_READ_ONLY | BLOCK_FLAG_DATA_ONLY, nullptr, cb, &ctx);
    if (ctx.error) std::rethrow_exception(ctx.error);
    check(err, "cannot read block map", ino);
  }

  // No lock: the map is immutable and the device is thread-safe.
  void read_runs(const FileMap& map, uint64_t offset, std::span<std::byte> out) const {
    read_block_runs(*device_, map.runs, block_size_, offset, out, where(map.ino));
  }

  // Caller holds lib_mutex_. Runs `fn` with the inode's xattrs read.
  template <typename Fn>
  void with_xattrs(uint64_t ino, Fn&& fn) {
    read_inode(ino);  // ENOENT for a bad inode, before anything else
    ext2_xattr_handle* h = nullptr;
    errcode_t err = ext2fs_xattrs_open(fs_.get(), static_cast<ext2_ino_t>(ino), &h);
    if (err == EXT2_ET_MISSING_EA_FEATURE) return;  // no xattrs on this filesystem
    check(err, "cannot read extended attributes", ino);
    std::unique_ptr<ext2_xattr_handle, void (*)(ext2_xattr_handle*)> guard(
        h, [](ext2_xattr_handle* p) { ext2fs_xattrs_close(&p); });
    unsigned int raw = XATTR_HANDLE_FLAG_RAW;  // ACLs as stored; converted by acl_disk_to_vfs
    ext2fs_xattrs_flags(h, &raw, nullptr);
    check(ext2fs_xattrs_read(h), "cannot read extended attributes", ino);
    fn(h);
  }


  const BlockDevicePtr device_;
  const std::string name_;
  const JournalReport journal_;
  const size_t max_listing_bytes_;
  std::string type_;
  uint64_t block_size_ = 0;
  uint64_t fs_blocks_ = 0;  // fits the device (checked at open)

  std::mutex lib_mutex_;
  FsHandle fs_;

  const CacheBudgetPtr budget_;  // the backup's: every cache of this volume charges it

  // Immutable run maps by inode, shared by every handle of the file.
  ext::SharedLru<FileMap> maps_;

  std::shared_ptr<const FileMap> opened(uint64_t handle) const {
    auto map = handles_.find(handle);
    if (!map) throw Error(EBADF, "unknown file handle " + std::to_string(handle), name_);
    return map;
  }

  HandleTable<const FileMap> handles_;  // open files

  DirIndexCache dir_indexes_;
};

}  // namespace

FilesystemPtr open_ext_filesystem(BlockDevicePtr device, const std::string& name,
                                  const FsOpenOptions& options) {
  if (!device) throw Error(EINVAL, "no device", name);
  // The raw superblock is checked before the journal code opens libext2fs
  // on it; the filesystem then opens on the replayed view (checked again).
  ext::check_superblock(*device, name);
  ext::JournaledDevice journaled = ext::open_ext_journal(device, name, options.replay_journal);
  if (journaled.device == device)
    return std::make_shared<ExtFilesystem>(std::move(journaled.device), name, std::move(journaled.report), options);
  try {
    return std::make_shared<ExtFilesystem>(std::move(journaled.device), name, journaled.report, options);
  } catch (const Error& e) {
    if (journaled.read_failed && *journaled.read_failed) throw;  // the device, not the journal
    // The journal's copies make a filesystem we cannot open (a damaged or
    // hostile journal): the stored state is still worth showing.
    JournalReport stored;
    stored.state = "skipped";
    stored.note = std::string("the replayed filesystem could not be opened (") + e.what() +
                  "): shown as stored (last checkpoint)";
    log::warn("journal", {{"volume", name}, {"state", stored.state}, {"note", stored.note}});
    return std::make_shared<ExtFilesystem>(std::move(device), name, std::move(stored), options);
  }
}

namespace ext {

FileMapCacheStats file_map_cache_stats(Filesystem& fs) {
  auto* ext = dynamic_cast<ExtFilesystem*>(&fs);
  if (ext == nullptr) throw Error(EINVAL, "not an ext filesystem");
  const auto s = ext->map_cache_stats();
  return FileMapCacheStats{s.entries, s.weight, s.hits, s.misses};
}

}  // namespace ext

}  // namespace sendense
