// Inodes and fork extent maps (extent lists and bmbt btrees).
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "readers/common/error.h"
#include "readers/fs/xfs/xfs_crc.h"
#include "readers/fs/xfs/xfs_volume.h"

namespace sendense::xfs {

namespace {

constexpr size_t kCoreSizeV3 = 176;
constexpr size_t kCoreSizeV2 = 100;
constexpr unsigned kMaxBmbtLevels = 9;            // enough for 2^64 extents of any block size
constexpr uint64_t kMaxExtents = uint64_t{8} << 20;  // ~256 MiB of extent table per file

// Classic timestamps: signed seconds and nanoseconds; bigtime: nanoseconds
// since the 1901 epoch of the classic range.
timespec decode_time(const unsigned char* p, bool bigtime) {
  timespec t{};
  if (bigtime) {
    const uint64_t ns = be64(p);
    t.tv_sec = static_cast<time_t>(static_cast<int64_t>(ns / 1'000'000'000) - (int64_t{1} << 31));
    t.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  } else {
    t.tv_sec = static_cast<time_t>(static_cast<int32_t>(be32(p)));
    t.tv_nsec = static_cast<long>(std::min<uint32_t>(be32(p + 4), 999'999'999));
  }
  return t;
}

}  // namespace

XfsVolume::XfsVolume(BlockDevicePtr device, std::string name)
    : device_(std::move(device)), name_(std::move(name)), sb_(read_superblock(*device_, name_)) {}

uint64_t XfsVolume::linear_block(uint64_t fsblock, uint64_t count, uint64_t ino) const {
  const uint64_t agno = fsblock >> sb_.agblklog;
  const uint64_t agbno = fsblock & ((uint64_t{1} << sb_.agblklog) - 1);
  const uint64_t ag_length = agno + 1 == sb_.agcount ? sb_.dblocks - agno * sb_.agblocks : sb_.agblocks;
  if (agno >= sb_.agcount || agbno >= ag_length || count > ag_length - agbno)
    throw Error(EIO, "block " + std::to_string(fsblock) + "+" + std::to_string(count) + " lies outside the filesystem",
                where(ino));
  return agno * sb_.agblocks + agbno;
}

Inode XfsVolume::read_inode(uint64_t ino) const {
  const unsigned shift = sb_.agblklog + sb_.inopblog;
  const uint64_t agno = ino >> shift;
  const uint64_t agbno = (ino >> sb_.inopblog) & ((uint64_t{1} << sb_.agblklog) - 1);
  const uint64_t index = ino & ((uint64_t{1} << sb_.inopblog) - 1);
  const uint64_t ag_length = agno + 1 == sb_.agcount ? sb_.dblocks - agno * sb_.agblocks : sb_.agblocks;
  if (ino == 0 || agno >= sb_.agcount || agbno >= ag_length) throw Error(ENOENT, "no such inode", where(ino));

  std::string raw(sb_.inode_size, '\0');
  const uint64_t offset = (agno * sb_.agblocks + agbno) * sb_.block_size + index * sb_.inode_size;
  device_->read_at(offset, std::as_writable_bytes(std::span(raw)));
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  auto fail = [&](const std::string& what) -> void { throw Error(EIO, "damaged inode: " + what, where(ino)); };

  if (be16(p) != kInodeMagic) fail("bad magic number");
  Inode inode;
  inode.ino = ino;
  inode.mode = be16(p + 2);
  inode.version = p[4];
  inode.format = p[5];
  if (sb_.v5 ? inode.version != 3 : inode.version < 1 || inode.version > 2)
    fail("inode version " + std::to_string(inode.version));
  const size_t core = inode.version == 3 ? kCoreSizeV3 : kCoreSizeV2;
  if (inode.version == 3) {
    if (!verify_xfs_crc(p, raw.size(), 100)) fail("checksum mismatch");
    if (be64(p + 152) != ino) fail("inode records number " + std::to_string(be64(p + 152)));
    if (std::memcmp(p + 160, sb_.meta_uuid, 16) != 0) fail("inode belongs to another filesystem (UUID)");
  }
  if (inode.mode == 0) throw Error(ENOENT, "inode is not in use", where(ino));
  inode.uid = be32(p + 8);
  inode.gid = be32(p + 12);
  inode.nlink = inode.version == 1 ? be16(p + 6) : be32(p + 16);
  if (inode.nlink == 0) throw Error(ENOENT, "inode is not linked", where(ino));
  const uint64_t flags2 = inode.version == 3 ? be64(p + 120) : 0;
  const bool bigtime = (flags2 & kDiFlag2Bigtime) != 0;
  inode.atime = decode_time(p + 32, bigtime);
  inode.mtime = decode_time(p + 40, bigtime);
  inode.ctime = decode_time(p + 48, bigtime);
  inode.size = be64(p + 56);
  inode.nblocks = be64(p + 64);
  if (flags2 & kDiFlag2Nrext64) {
    inode.nextents = be64(p + 24);
    inode.anextents = be32(p + 76);
  } else {
    inode.nextents = be32(p + 76);
    inode.anextents = be16(p + 80);
  }
  const uint8_t forkoff = p[82];
  inode.aformat = p[83];
  inode.flags = be16(p + 90);
  inode.generation = be32(p + 92);
  if (inode.size > (uint64_t{1} << 63) - 1) fail("size " + std::to_string(inode.size));

  const size_t literal = raw.size() - core;
  const size_t attr_offset = size_t{forkoff} * 8;
  if (attr_offset >= literal) fail("attribute fork offset " + std::to_string(forkoff));
  const size_t data_size = forkoff != 0 ? attr_offset : literal;
  inode.data_fork = raw.substr(core, data_size);
  if (forkoff != 0) {
    inode.attr_fork = raw.substr(core + attr_offset);
    if (inode.aformat != kFmtLocal && inode.aformat != kFmtExtents && inode.aformat != kFmtBtree)
      fail("attribute fork format " + std::to_string(inode.aformat));
  }

  bool format_ok = false;
  switch (inode.mode & S_IFMT) {
    case S_IFDIR:
    case S_IFLNK:
      format_ok = inode.format == kFmtLocal || inode.format == kFmtExtents || inode.format == kFmtBtree;
      break;
    case S_IFREG:
      format_ok = inode.format == kFmtExtents || inode.format == kFmtBtree;
      break;
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      format_ok = inode.format == kFmtDev;
      if (format_ok) inode.rdev = be32(p + core);
      break;
    default:
      fail("file type " + std::to_string(inode.mode & S_IFMT));
  }
  if (!format_ok) fail("data fork format " + std::to_string(inode.format) + " for this file type");
  return inode;
}

std::vector<Extent> XfsVolume::data_extents(const Inode& inode) const { return fork_extents(inode, false); }
std::vector<Extent> XfsVolume::attr_extents(const Inode& inode) const { return fork_extents(inode, true); }

void XfsVolume::add_extent_records(const Inode& inode, const unsigned char* recs, size_t count,
                                   std::vector<Extent>& out, bool attr) const {
  const uint64_t expected = attr ? inode.anextents : inode.nextents;
  for (size_t i = 0; i < count; ++i) {
    const unsigned char* r = recs + i * 16;
    const uint64_t l0 = be64(r);
    const uint64_t l1 = be64(r + 8);
    Extent e;
    e.unwritten = (l0 >> 63) != 0;
    e.offset = (l0 >> 9) & ((uint64_t{1} << 54) - 1);
    const uint64_t fsblock = ((l0 & 0x1ff) << 43) | (l1 >> 21);
    e.count = l1 & 0x1fffff;
    if (e.count == 0) throw Error(EIO, "empty extent record", where(inode.ino));
    if (!out.empty() && e.offset < out.back().offset + out.back().count)
      throw Error(EIO, "overlapping or unordered extents at file block " + std::to_string(e.offset),
                  where(inode.ino));
    if (out.size() >= expected || out.size() >= kMaxExtents)
      throw Error(EIO, "more extents than the inode records (" + std::to_string(expected) + ")", where(inode.ino));
    e.block = linear_block(fsblock, e.count, inode.ino);
    out.push_back(e);
  }
}

void XfsVolume::walk_bmbt_block(const Inode& inode, uint64_t fsblock, unsigned level, std::vector<Extent>& out,
                                bool attr) const {
  std::string block(sb_.block_size, '\0');
  device_->read_at(block_offset(linear_block(fsblock, 1, inode.ino)), std::as_writable_bytes(std::span(block)));
  const auto* p = reinterpret_cast<const unsigned char*>(block.data());
  const std::string what = "extent btree block " + std::to_string(fsblock);
  if (be32(p) != (sb_.v5 ? kBmap3Magic : kBmapMagic)) throw Error(EIO, what + ": bad magic number", where(inode.ino));
  const size_t header = sb_.v5 ? 72 : 24;
  if (sb_.v5) check_v5_block_header(inode, p, block.size(), 64, 40, 56, "extent btree block");
  const unsigned block_level = be16(p + 4);
  const size_t numrecs = be16(p + 6);
  const size_t maxrecs = (block.size() - header) / 16;
  if (block_level != level || numrecs == 0 || numrecs > maxrecs)
    throw Error(EIO, what + ": bad level or record count", where(inode.ino));
  if (level == 0) {
    add_extent_records(inode, p + header, numrecs, out, attr);
    return;
  }
  const unsigned char* ptrs = p + header + maxrecs * 8;
  for (size_t i = 0; i < numrecs; ++i) walk_bmbt_block(inode, be64(ptrs + i * 8), level - 1, out, attr);
}

std::vector<Extent> XfsVolume::fork_extents(const Inode& inode, bool attr) const {
  const std::string& fork = attr ? inode.attr_fork : inode.data_fork;
  const uint8_t format = attr ? inode.aformat : inode.format;
  const uint64_t expected = attr ? inode.anextents : inode.nextents;
  const auto* p = reinterpret_cast<const unsigned char*>(fork.data());
  std::vector<Extent> out;
  if (attr && fork.empty()) return out;
  if (format == kFmtExtents) {
    if (expected > fork.size() / 16)
      throw Error(EIO, std::to_string(expected) + " extents do not fit the inode", where(inode.ino));
    out.reserve(expected);
    add_extent_records(inode, p, expected, out, attr);
  } else if (format == kFmtBtree) {
    if (fork.size() < 4 + 16) throw Error(EIO, "extent btree root does not fit the inode", where(inode.ino));
    const unsigned level = be16(p);
    const size_t numrecs = be16(p + 2);
    const size_t maxrecs = (fork.size() - 4) / 16;
    if (level == 0 || level > kMaxBmbtLevels || numrecs == 0 || numrecs > maxrecs)
      throw Error(EIO, "bad extent btree root (level " + std::to_string(level) + ", " + std::to_string(numrecs) +
                           " records)", where(inode.ino));
    out.reserve(std::min<uint64_t>(expected, 65536));  // the count is guest data: grow past this as read
    const unsigned char* ptrs = p + 4 + maxrecs * 8;
    for (size_t i = 0; i < numrecs; ++i) walk_bmbt_block(inode, be64(ptrs + i * 8), level - 1, out, attr);
  } else {
    return out;
  }
  if (out.size() != expected)
    throw Error(EIO, "extent map holds " + std::to_string(out.size()) + " extents, the inode records " +
                         std::to_string(expected), where(inode.ino));
  return out;
}

void XfsVolume::check_v5_block_header(const Inode& inode, const unsigned char* block, size_t length,
                                      size_t crc_offset, size_t uuid_offset, size_t owner_offset,
                                      const char* what) const {
  if (!verify_xfs_crc(block, length, crc_offset))
    throw Error(EIO, std::string(what) + ": checksum mismatch", where(inode.ino));
  if (std::memcmp(block + uuid_offset, sb_.meta_uuid, 16) != 0)
    throw Error(EIO, std::string(what) + ": belongs to another filesystem (UUID)", where(inode.ino));
  if (be64(block + owner_offset) != inode.ino)
    throw Error(EIO, std::string(what) + ": owned by inode " + std::to_string(be64(block + owner_offset)),
                where(inode.ino));
}

std::optional<std::string> XfsVolume::read_fork_blocks(const std::vector<Extent>& extents, uint64_t offset,
                                                       uint64_t count, uint64_t ino) const {
  std::string out(count * sb_.block_size, '\0');
  auto it = std::upper_bound(extents.begin(), extents.end(), offset,
                             [](uint64_t o, const Extent& e) { return o < e.offset + e.count; });
  uint64_t covered = 0;
  for (; it != extents.end() && it->offset < offset + count; ++it) {
    if (it->unwritten) continue;
    const uint64_t from = std::max(offset, it->offset);
    const uint64_t to = std::min(offset + count, it->offset + it->count);
    device_->read_at(block_offset(it->block + (from - it->offset)),
                     std::as_writable_bytes(std::span(out)).subspan((from - offset) * sb_.block_size,
                                                                    (to - from) * sb_.block_size));
    covered += to - from;
  }
  if (covered == 0) return std::nullopt;
  if (covered != count)
    throw Error(EIO, "blocks " + std::to_string(offset) + "+" + std::to_string(count) + " are only partly mapped",
                where(ino));
  return out;
}

}  // namespace sendense::xfs
