// Directories (short form, block, leaf, node and btree-mapped: every form
// keeps its entries in data blocks below kDirLeafOffset, read in logical
// order) and symbolic links (in the inode or in blocks).
#include <sys/stat.h>

#include "readers/common/error.h"
#include "readers/fs/listing_cap.h"
#include "readers/fs/xfs/xfs_volume.h"

namespace sendense::xfs {

namespace {

constexpr uint64_t kMaxSymlinkLength = 1024;  // XFS_SYMLINK_MAXLEN

uint32_t type_from_ftype(uint8_t ft) {
  switch (ft) {
    case 1: return S_IFREG;
    case 2: return S_IFDIR;
    case 3: return S_IFCHR;
    case 4: return S_IFBLK;
    case 5: return S_IFIFO;
    case 6: return S_IFSOCK;
    case 7: return S_IFLNK;
    default: return 0;
  }
}

}  // namespace

void XfsVolume::parse_shortform_dir(const Inode& dir, std::vector<DirEntry>& out) const {
  const std::string& fork = dir.data_fork;
  const auto* p = reinterpret_cast<const unsigned char*>(fork.data());
  auto fail = [&](const std::string& what) -> void {
    throw Error(EIO, "damaged short-form directory: " + what, where(dir.ino));
  };
  if (dir.size > fork.size() || dir.size < 6) fail("size " + std::to_string(dir.size));
  const size_t end = static_cast<size_t>(dir.size);
  const size_t count = p[0];
  const size_t ino_size = p[1] != 0 ? 8 : 4;
  if (2 + ino_size > end) fail("header past its end");
  auto read_ino = [&](size_t at) { return ino_size == 8 ? be64(p + at) : uint64_t{be32(p + at)}; };
  out.push_back(DirEntry{".", dir.ino, S_IFDIR});
  out.push_back(DirEntry{"..", read_ino(2), S_IFDIR});
  size_t pos = 2 + ino_size;
  for (size_t i = 0; i < count; ++i) {
    if (pos + 3 > end) fail("entry " + std::to_string(i) + " past its end");
    const size_t namelen = p[pos];
    const size_t name_at = pos + 3;
    const size_t after_name = name_at + namelen + (sb_.ftype ? 1 : 0);
    if (namelen == 0 || after_name + ino_size > end) fail("entry " + std::to_string(i) + " past its end");
    DirEntry e;
    e.name.assign(reinterpret_cast<const char*>(p + name_at), namelen);
    e.type = sb_.ftype ? type_from_ftype(p[name_at + namelen]) : 0;
    e.ino = read_ino(after_name);
    out.push_back(std::move(e));
    pos = after_name + ino_size;
  }
}

void XfsVolume::parse_dir_data_block(const Inode& dir, const std::string& block, uint64_t dir_block,
                                     std::vector<DirEntry>& out, ListingCap& cap) const {
  const auto* p = reinterpret_cast<const unsigned char*>(block.data());
  const size_t size = block.size();
  const std::string what = "directory block " + std::to_string(dir_block);
  auto fail = [&](const std::string& why) -> void { throw Error(EIO, "damaged " + what + ": " + why, where(dir.ino)); };
  const uint32_t magic = be32(p);
  bool single_block = false;
  if (sb_.v5) {
    if (magic != kDir3BlockMagic && magic != kDir3DataMagic) fail("bad magic number");
    single_block = magic == kDir3BlockMagic;
    check_v5_block_header(dir, p, size, 4, 24, 40, what.c_str());
  } else {
    if (magic != kDir2BlockMagic && magic != kDir2DataMagic) fail("bad magic number");
    single_block = magic == kDir2BlockMagic;
  }
  const size_t header = sb_.v5 ? 64 : 16;
  size_t end = size;
  if (single_block) {  // a block directory: leaf entries and a tail follow the data
    const uint64_t leaf_count = be32(p + size - 8);
    if (leaf_count > (size - header - 8) / 8) fail("leaf count " + std::to_string(leaf_count));
    end = size - 8 - static_cast<size_t>(leaf_count) * 8;
  }
  size_t pos = header;
  while (pos < end) {
    if (end - pos < 8) fail("entry at " + std::to_string(pos) + " past its end");
    if (be16(p + pos) == 0xffff) {  // unused space
      const size_t length = be16(p + pos + 2);
      if (length < 8 || length % 8 != 0 || length > end - pos) fail("free space of " + std::to_string(length));
      pos += length;
      continue;
    }
    if (end - pos < 16) fail("entry at " + std::to_string(pos) + " past its end");
    const uint64_t ino = be64(p + pos);
    const size_t namelen = p[pos + 8];
    const size_t entry_size = (8 + 1 + namelen + (sb_.ftype ? 1 : 0) + 2 + 7) & ~size_t{7};
    if (namelen == 0 || entry_size > end - pos) fail("entry at " + std::to_string(pos) + " past its end");
    if (be16(p + pos + entry_size - 2) != pos) fail("entry at " + std::to_string(pos) + " has a wrong tag");
    DirEntry e;
    e.name.assign(reinterpret_cast<const char*>(p + pos + 9), namelen);
    cap.add(e.name, where(dir.ino));
    e.ino = ino;
    e.type = sb_.ftype ? type_from_ftype(p[pos + 9 + namelen]) : 0;
    out.push_back(std::move(e));
    pos += entry_size;
  }
}

std::vector<DirEntry> XfsVolume::read_directory(const Inode& dir, size_t max_listing_bytes) const {
  if (!S_ISDIR(dir.mode)) throw Error(ENOTDIR, "not a directory", where(dir.ino));
  std::vector<DirEntry> out;
  if (dir.format == kFmtLocal) {
    parse_shortform_dir(dir, out);
    return out;
  }
  if (dir.size > kDirLeafOffset) throw Error(EIO, "directory size " + std::to_string(dir.size), where(dir.ino));
  const std::vector<Extent> extents = data_extents(dir);
  const uint64_t per_block = sb_.dir_block_size / sb_.block_size;
  // Data blocks end where the data ends (di_size), at most at the leaf offset.
  const uint64_t data_end = (dir.size + sb_.block_size - 1) / sb_.block_size;
  ListingCap cap(max_listing_bytes);
  uint64_t next = 0;  // first directory block not read yet, in filesystem blocks
  for (const Extent& e : extents) {
    if (e.offset >= data_end) break;
    uint64_t b = std::max(next, e.offset - e.offset % per_block);
    const uint64_t stop = std::min(e.offset + e.count, data_end);
    for (; b < stop; b += per_block) {
      std::optional<std::string> block = read_fork_blocks(extents, b, per_block, dir.ino);
      if (block) parse_dir_data_block(dir, *block, b / per_block, out, cap);
      next = b + per_block;
    }
  }
  if (out.empty()) throw Error(EIO, "directory has no data blocks", where(dir.ino));
  return out;
}

std::string XfsVolume::read_symlink(const Inode& inode) const {
  if (!S_ISLNK(inode.mode)) throw Error(EINVAL, "not a symbolic link", where(inode.ino));
  if (inode.size == 0 || inode.size > kMaxSymlinkLength)
    throw Error(EIO, "symbolic link of " + std::to_string(inode.size) + " bytes", where(inode.ino));
  const size_t size = static_cast<size_t>(inode.size);
  if (inode.format == kFmtLocal) {
    if (size > inode.data_fork.size()) throw Error(EIO, "symbolic link longer than its inode", where(inode.ino));
    return inode.data_fork.substr(0, size);
  }
  const std::vector<Extent> extents = data_extents(inode);
  if (extents.size() > kMaxSymlinkLength / 8)
    throw Error(EIO, std::to_string(extents.size()) + " extents for a symbolic link", where(inode.ino));
  std::string target;
  for (const Extent& e : extents) {
    if (target.size() >= size) break;
    if (e.count > 8 || e.unwritten) throw Error(EIO, "symbolic link block map is not plausible", where(inode.ino));
    std::optional<std::string> bytes = read_fork_blocks(extents, e.offset, e.count, inode.ino);
    if (!bytes) throw Error(EIO, "symbolic link block is not mapped", where(inode.ino));
    if (!sb_.v5) {
      target += *bytes;
      continue;
    }
    // v5: each extent starts with a header naming its place in the target.
    const auto* p = reinterpret_cast<const unsigned char*>(bytes->data());
    if (be32(p) != kSymlinkMagic) throw Error(EIO, "symbolic link block: bad magic number", where(inode.ino));
    check_v5_block_header(inode, p, bytes->size(), 12, 16, 32, "symbolic link block");
    const uint32_t at = be32(p + 4);
    const uint32_t length = be32(p + 8);
    if (at != target.size() || length > bytes->size() - 56 || at + length > size)
      throw Error(EIO, "symbolic link block: bad offset or length", where(inode.ino));
    target.append(bytes->data() + 56, length);
  }
  if (target.size() < size) throw Error(EIO, "symbolic link target is short", where(inode.ino));
  target.resize(size);
  return target;
}

}  // namespace sendense::xfs
