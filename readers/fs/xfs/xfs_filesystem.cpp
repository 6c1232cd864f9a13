// XFS over XfsVolume (see xfs_filesystem.h).
//
// Locks (none is taken inside another except the caches' own, which call
// nothing out):
//   handles_       the table of open files (its own mutex)
//   dir_indexes_   the per-directory name index cache (its own mutex)
//   maps_          the file-map cache (its own mutex)
// Metadata decoding (XfsVolume) is stateless and needs no lock; file data is
// read from immutable maps straight from the device.
#include "readers/fs/xfs/xfs_filesystem.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "readers/common/error.h"
#include "readers/common/handle_table.h"
#include "readers/common/log.h"
#include "readers/common/shared_lru.h"
#include "readers/fs/block_runs.h"
#include "readers/fs/dir_index.h"
#include "readers/fs/xfs/xfs_log.h"
#include "readers/fs/xfs/xfs_volume.h"

namespace sendense {

namespace {

using xfs::Extent;
using xfs::Inode;
using xfs::XfsVolume;

constexpr size_t kMapCacheFiles = 256;
constexpr size_t kMapCacheBytes = 6u << 20;  // per volume, within the backup's budget

struct FileMap {
  uint64_t ino = 0;
  uint64_t size = 0;
  std::vector<BlockRun> runs;  // written extents only: holes and unwritten extents read as zeros
};

// XFS keeps device numbers in the old SysV layout: 14-bit major, 18-bit minor.
uint64_t linux_rdev(uint32_t dev) { return makedev((dev >> 18) & 0x3fff, dev & 0x3ffff); }

class XfsFilesystem final : public Filesystem {
 public:
  XfsFilesystem(BlockDevicePtr device, std::string name, const FsOpenOptions& options)
      : device_(std::move(device)),
        name_(std::move(name)),
        max_listing_bytes_(options.max_listing_bytes),
        // Metadata reads are small and often hit the same inode cluster or
        // directory block: a cache (file data goes straight to device_).
        volume_(make_block_cache(device_, 32 * 1024, 512, options.cache_budget), name_),
        maps_(kMapCacheFiles, kMapCacheBytes, options.cache_budget),
        dir_indexes_(options.cache_budget) {
    journal_ = xfs::inspect_log(*device_, volume_.sb());
    if (journal_.state == "clean") {
      log::info("xfs_log", {{"volume", name_}, {"state", journal_.state}});
    } else {
      log::warn("xfs_log", {{"volume", name_}, {"state", journal_.state}, {"note", journal_.note}});
    }
  }

  uint64_t root_ino() const override { return volume_.sb().root_ino; }
  std::string type_name() const override { return "xfs"; }
  JournalReport journal() const override { return journal_; }

  Attr getattr(uint64_t ino) override { return to_attr(read_inode(ino)); }

  std::optional<Attr> lookup(uint64_t dir, std::string_view name) override {
    if (name.empty() || name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
      return std::nullopt;
    std::shared_ptr<const DirIndex> index = dir_index(dir);
    auto it = index->names.find(std::string(name));
    if (it == index->names.end()) return std::nullopt;
    if (it->second > xfs::kMaxInodeNumber)
      throw Error(EIO, "entry '" + std::string(name) + "' names inode " + std::to_string(it->second) +
                           ", beyond the 2^40 inode numbers the daemon can address", volume_.where(dir));
    try {
      return getattr(it->second);
    } catch (const Error& e) {
      if (e.code() != ENOENT) throw;
      throw Error(EIO, "entry '" + std::string(name) + "' names a free inode " + std::to_string(it->second),
                  volume_.where(dir));
    }
  }

  std::vector<DirEntry> readdir(uint64_t dir) override {
    std::vector<DirEntry> entries = volume_.read_directory(read_inode(dir), max_listing_bytes_);
    // An inode number the daemon cannot address is left out of the listing
    // (one bad entry must not fail the whole readdir); lookup() names it.
    auto bad = std::remove_if(entries.begin(), entries.end(), [&](const DirEntry& e) {
      if (e.ino <= xfs::kMaxInodeNumber) return false;
      log::warn("xfs_entry_skipped", {{"volume", name_}, {"dir", std::to_string(dir)}, {"name", e.name},
                                      {"reason", "inode " + std::to_string(e.ino) + " needs more than 40 bits"}});
      return true;
    });
    entries.erase(bad, entries.end());
    return entries;
  }

  std::string readlink(uint64_t ino) override { return volume_.read_symlink(read_inode(ino)); }

  uint64_t open(uint64_t ino) override {
    std::shared_ptr<const FileMap> map = file_map(ino);
    return handles_.add(std::move(map));
  }

  size_t read(uint64_t handle, uint64_t offset, std::span<std::byte> buf) override {
    const std::shared_ptr<const FileMap> map = opened(handle);
    if (offset >= map->size) return 0;
    const size_t count = static_cast<size_t>(std::min<uint64_t>(buf.size(), map->size - offset));
    read_runs(*map, offset, buf.first(count));
    return count;
  }

  void release(uint64_t handle) override {
    handles_.take(handle);
  }

  std::optional<std::vector<sendense::Extent>> map_read(uint64_t handle, uint64_t offset, size_t size) override {
    const std::shared_ptr<const FileMap> map = opened(handle);
    if (offset >= map->size) return std::vector<sendense::Extent>{};
    return map_block_runs(*device_, map->runs, volume_.sb().block_size, offset, std::min<uint64_t>(size, map->size - offset),
                          kMaxReadExtents);
  }

  std::optional<std::vector<sendense::Extent>> map_file(uint64_t ino, size_t max_extents) override {
    const std::shared_ptr<const FileMap> map = file_map(ino);
    return map_block_runs(*device_, map->runs, volume_.sb().block_size, 0, map->size, max_extents);
  }

  std::vector<std::string> listxattr(uint64_t ino) override {
    std::vector<std::string> names;
    for (xfs::Xattr& x : volume_.read_xattrs(read_inode(ino))) names.push_back(std::move(x.name));
    return names;
  }

  std::optional<std::string> getxattr(uint64_t ino, std::string_view name) override {
    const Inode inode = read_inode(ino);
    for (const xfs::Xattr& x : volume_.read_xattrs(inode)) {
      if (x.name != name) continue;
      std::string value = volume_.xattr_value(inode, x);
      if (name == "system.posix_acl_access" || name == "system.posix_acl_default") {
        std::optional<std::string> vfs = xfs::acl_xfs_to_vfs(value);
        if (!vfs) throw Error(EIO, "malformed " + std::string(name), volume_.where(ino));
        return vfs;
      }
      return value;
    }
    return std::nullopt;
  }

  FsStat statfs() override {
    const xfs::Superblock& sb = volume_.sb();
    FsStat st;
    st.block_size = sb.block_size;
    // An internal log is not usable space; a damaged sb_logblocks larger
    // than the filesystem (log state "unknown") must not wrap the count.
    const uint64_t log_blocks = sb.log_start != 0 && sb.log_blocks < sb.dblocks ? sb.log_blocks : 0;
    st.blocks = sb.dblocks - log_blocks;
    st.blocks_free = std::min(sb.fdblocks, st.blocks);
    st.files = sb.icount;
    st.files_free = std::min(sb.ifree, sb.icount);
    st.name_max = 255;
    return st;
  }

 private:
  Inode read_inode(uint64_t ino) const {
    if (ino > xfs::kMaxInodeNumber) throw Error(ENOENT, "no such inode", volume_.where(ino));
    return volume_.read_inode(ino);
  }

  Attr to_attr(const Inode& inode) const {
    Attr a;
    a.ino = inode.ino;
    a.mode = inode.mode;
    a.nlink = inode.nlink;
    a.uid = inode.uid;
    a.gid = inode.gid;
    a.size = S_ISCHR(inode.mode) || S_ISBLK(inode.mode) || S_ISFIFO(inode.mode) || S_ISSOCK(inode.mode) ? 0 : inode.size;
    a.blocks = inode.nblocks * (volume_.sb().block_size / 512);
    if (S_ISCHR(inode.mode) || S_ISBLK(inode.mode)) a.rdev = linux_rdev(inode.rdev);
    a.generation = inode.generation;
    a.atime = inode.atime;
    a.mtime = inode.mtime;
    a.ctime = inode.ctime;
    return a;
  }

  std::shared_ptr<const DirIndex> dir_index(uint64_t dir) {
    return dir_indexes_.get(dir, [&] { return DirIndex::of(volume_.read_directory(read_inode(dir), max_listing_bytes_)); });
  }

  // The file's map: from the cache or mapped now. Two threads may map the
  // same file at once; the cache keeps one (maps are immutable and equal).
  std::shared_ptr<const FileMap> file_map(uint64_t ino) {
    if (auto cached = maps_.find(ino)) return cached;
    const Inode inode = read_inode(ino);
    if (S_ISDIR(inode.mode)) throw Error(EISDIR, "is a directory", volume_.where(ino));
    if (!S_ISREG(inode.mode)) throw Error(EINVAL, "not a regular file", volume_.where(ino));
    if (inode.flags & xfs::kDiFlagRealtime)
      throw Error(EOPNOTSUPP, "file data on the XFS realtime device is not supported", volume_.where(ino));
    auto map = std::make_shared<FileMap>();
    map->ino = ino;
    map->size = inode.size;
    const uint64_t bs = volume_.sb().block_size;
    const uint64_t end_block = inode.size / bs + (inode.size % bs != 0);
    for (const Extent& e : volume_.data_extents(inode)) {
      if (e.offset >= end_block) break;  // preallocated past EOF
      if (e.unwritten) continue;          // reads as zeros
      const uint64_t length = std::min(e.count, end_block - e.offset);
      if (!map->runs.empty()) {
        BlockRun& last = map->runs.back();
        if (last.logical + last.length == e.offset && last.physical + last.length == e.block) {
          last.length += length;
          continue;
        }
      }
      map->runs.push_back(BlockRun{e.offset, e.block, length});
    }
    map->runs.shrink_to_fit();
    const size_t weight = sizeof(FileMap) + map->runs.size() * sizeof(BlockRun);  // before the move
    return maps_.insert(ino, std::move(map), weight);
  }

  // No lock: the map is immutable and the device is thread-safe.
  void read_runs(const FileMap& map, uint64_t offset, std::span<std::byte> out) const {
    read_block_runs(*device_, map.runs, volume_.sb().block_size, offset, out, volume_.where(map.ino));
  }

  const BlockDevicePtr device_;
  const std::string name_;
  const size_t max_listing_bytes_;
  const XfsVolume volume_;
  JournalReport journal_;

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

FilesystemPtr open_xfs_filesystem(BlockDevicePtr device, const std::string& name, const FsOpenOptions& options) {
  if (!device) throw Error(EINVAL, "no device", name);
  return std::make_shared<XfsFilesystem>(std::move(device), name, options);
}

}  // namespace sendense
