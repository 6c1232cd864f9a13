// The XFS superblock and AG headers, validated before anything trusts them.
#include <cstdio>
#include <cstring>
#include <vector>

#include "readers/common/error.h"
#include "readers/fs/xfs/xfs_crc.h"
#include "readers/fs/xfs/xfs_format.h"

namespace sendense::xfs {

namespace {

// versionnum bits (v4) and features2.
constexpr uint32_t kVersionNumMask = 0x000f;
constexpr uint32_t kVersionDirV2 = 0x2000;
constexpr uint32_t kVersionMoreBits = 0x8000;
constexpr uint32_t kFeatures2Ftype = 0x200;
constexpr uint32_t kFeatures2Crc = 0x100;

// v5 incompat bits this reader understands.
constexpr uint32_t kIncompatFtype = 0x1;
constexpr uint32_t kIncompatSpinodes = 0x2;
constexpr uint32_t kIncompatMetaUuid = 0x4;
constexpr uint32_t kIncompatBigtime = 0x8;
constexpr uint32_t kIncompatNeedsRepair = 0x10;
constexpr uint32_t kIncompatNrext64 = 0x20;
constexpr uint32_t kIncompatExchange = 0x40;  // log-level only: files read as usual
constexpr uint32_t kIncompatParent = 0x80;    // parent pointers live in xattrs we hide
constexpr uint32_t kIncompatKnown = kIncompatFtype | kIncompatSpinodes | kIncompatMetaUuid | kIncompatBigtime |
                                    kIncompatNrext64 | kIncompatExchange | kIncompatParent;

// Far above any real filesystem, far below what would make opening slow:
// each AG costs two sector reads at open.
constexpr uint32_t kMaxAgCount = 100000;

uint8_t log2_ceil(uint64_t v) {
  uint8_t l = 0;
  while ((uint64_t{1} << l) < v) ++l;
  return l;
}

}  // namespace

Superblock read_superblock(const BlockDevice& device, const std::string& name) {
  auto fail = [&](const std::string& what) -> void { throw Error(EIO, "bad XFS superblock: " + what, name); };
  const uint64_t device_size = device.size();
  if (device_size < 4096) throw Error(EIO, "device too small for XFS", name);
  unsigned char raw[512];
  device.read_at(0, std::as_writable_bytes(std::span(raw)));
  const unsigned char* p = raw;
  if (be32(p) != kSbMagic) fail("bad magic number");

  Superblock sb;
  sb.block_size = be32(p + 4);
  sb.dblocks = be64(p + 8);
  sb.root_ino = be64(p + 56);
  sb.log_start = be64(p + 48);
  sb.agblocks = be32(p + 84);
  sb.agcount = be32(p + 88);
  sb.log_blocks = be32(p + 96);
  sb.versionnum = be16(p + 100);
  sb.sect_size = be16(p + 102);
  sb.inode_size = be16(p + 104);
  const uint32_t inopblock = be16(p + 106);
  sb.block_log = p[120];
  const uint8_t sectlog = p[121];
  const uint8_t inodelog = p[122];
  sb.inopblog = p[123];
  sb.agblklog = p[124];
  sb.icount = be64(p + 128);
  sb.ifree = be64(p + 136);
  sb.fdblocks = be64(p + 144);
  const uint8_t dirblklog = p[192];
  sb.features2 = be32(p + 200);

  const uint32_t version = sb.versionnum & kVersionNumMask;
  if (version != 4 && version != 5) fail("version " + std::to_string(version) + " (only v4 and v5 are read)");
  sb.v5 = version == 5;
  if (sb.block_log < 9 || sb.block_log > 16 || sb.block_size != (1u << sb.block_log))
    fail("block size " + std::to_string(sb.block_size));
  if (sectlog < 9 || sectlog > 15 || sb.sect_size != (1u << sectlog) || sb.sect_size > sb.block_size)
    fail("sector size " + std::to_string(sb.sect_size));
  if (inodelog < 8 || inodelog > 11 || sb.inode_size != (1u << inodelog) || sb.inode_size > sb.block_size ||
      (sb.v5 && sb.inode_size < 512))
    fail("inode size " + std::to_string(sb.inode_size));
  if (inopblock != sb.block_size / sb.inode_size || sb.inopblog != sb.block_log - inodelog)
    fail("inodes per block " + std::to_string(inopblock));
  if (sb.agblocks < 64 || sb.agblocks > (1u << 31) - 1 || sb.agblklog != log2_ceil(sb.agblocks))
    fail("AG size " + std::to_string(sb.agblocks) + " blocks (log " + std::to_string(sb.agblklog) + ")");
  if (sb.agcount == 0 || sb.agcount > kMaxAgCount) fail("AG count " + std::to_string(sb.agcount));
  if (sb.agblklog + sb.inopblog > 56) fail("inode numbers wider than 64 bits");
  const uint64_t span = uint64_t{sb.agcount} * sb.agblocks;
  if (sb.dblocks == 0 || sb.dblocks > span || sb.dblocks <= span - sb.agblocks)
    fail(std::to_string(sb.dblocks) + " blocks do not make " + std::to_string(sb.agcount) + " AGs of " +
         std::to_string(sb.agblocks));
  if (sb.dblocks > device_size / sb.block_size)
    fail("filesystem of " + std::to_string(sb.dblocks * sb.block_size) + " bytes does not fit its device of " +
         std::to_string(device_size) + " bytes (truncated image?)");
  if (dirblklog > 16 - sb.block_log) fail("directory block log " + std::to_string(dirblklog));
  sb.dir_block_size = sb.block_size << dirblklog;
  if (sb.log_start != 0 && (sb.log_blocks == 0 || sb.log_start >= (uint64_t{sb.agcount} << sb.agblklog)))
    fail("log at block " + std::to_string(sb.log_start));

  if (sb.v5) {
    std::vector<unsigned char> sector(sb.sect_size);  // the CRC covers the whole sector
    device.read_at(0, std::as_writable_bytes(std::span(sector)));
    if (!verify_xfs_crc(sector.data(), sector.size(), 224)) fail("checksum mismatch");
    sb.ro_compat = be32(p + 212);
    sb.incompat = be32(p + 216);
    sb.log_incompat = be32(p + 220);
    if (sb.incompat & kIncompatNeedsRepair)
      throw Error(EIO, "XFS is marked as needing xfs_repair: its metadata cannot be trusted", name);
    if (sb.incompat & ~kIncompatKnown)
      throw Error(EOPNOTSUPP, "XFS incompatible features 0x" + [&] {
        char b[16];
        std::snprintf(b, sizeof b, "%x", sb.incompat & ~kIncompatKnown);
        return std::string(b);
      }() + " are not supported", name);
    sb.ftype = (sb.incompat & kIncompatFtype) != 0;
    sb.nrext64 = (sb.incompat & kIncompatNrext64) != 0;
    std::memcpy(sb.meta_uuid, (sb.incompat & kIncompatMetaUuid) ? p + 248 : p + 32, 16);
  } else {
    if (!(sb.versionnum & kVersionDirV2)) throw Error(EOPNOTSUPP, "XFS v1 directories are not supported", name);
    if (!(sb.versionnum & kVersionMoreBits)) sb.features2 = 0;
    if (sb.features2 & kFeatures2Crc) fail("v4 superblock with the CRC feature");
    sb.ftype = (sb.features2 & kFeatures2Ftype) != 0;
  }

  // Every AG header: a damaged one means the volume is not what it claims.
  std::vector<unsigned char> sector(sb.sect_size);
  for (uint32_t ag = 0; ag < sb.agcount; ++ag) {
    const uint64_t base = uint64_t{ag} * sb.agblocks * sb.block_size;
    const uint64_t ag_length = ag + 1 == sb.agcount ? sb.dblocks - uint64_t{ag} * sb.agblocks : sb.agblocks;
    struct Header {
      const char* what;
      uint32_t magic;
      size_t crc_offset;
      uint64_t sector;
    };
    for (const Header& h : {Header{"AGF", kAgfMagic, 216, 1}, Header{"AGI", kAgiMagic, 312, 2}}) {
      device.read_at(base + h.sector * sb.sect_size, std::as_writable_bytes(std::span(sector)));
      const unsigned char* s = sector.data();
      const std::string where = "AG " + std::to_string(ag) + " " + h.what;
      if (be32(s) != h.magic) throw Error(EIO, "damaged " + where + ": bad magic number", name);
      if (be32(s + 4) != 1 || be32(s + 8) != ag || be32(s + 12) != ag_length)
        throw Error(EIO, "damaged " + where + ": bad version, sequence number or length", name);
      if (sb.v5 && !verify_xfs_crc(s, sector.size(), h.crc_offset))
        throw Error(EIO, "damaged " + where + ": checksum mismatch", name);
    }
  }
  return sb;
}

}  // namespace sendense::xfs
