// The XFS on-disk format as this reader uses it: big-endian field access,
// magic numbers, feature bits and the validated superblock. Offsets follow
// xfsprogs/kernel libxfs/xfs_format.h, xfs_da_format.h and xfs_log_format.h
// (read for reference; nothing copied). Private to readers/fs/xfs/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "readers/block/block_device.h"

namespace sendense::xfs {

inline uint16_t be16(const unsigned char* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t be32(const unsigned char* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}
inline uint64_t be64(const unsigned char* p) { return uint64_t{be32(p)} << 32 | be32(p + 4); }

// Magic numbers.
inline constexpr uint32_t kSbMagic = 0x58465342;         // XFSB
inline constexpr uint32_t kAgfMagic = 0x58414746;        // XAGF
inline constexpr uint32_t kAgiMagic = 0x58414749;        // XAGI
inline constexpr uint16_t kInodeMagic = 0x494e;          // IN
inline constexpr uint32_t kBmapMagic = 0x424d4150;       // BMAP (v4 bmbt block)
inline constexpr uint32_t kBmap3Magic = 0x424d4133;      // BMA3 (v5 bmbt block)
inline constexpr uint32_t kDir2BlockMagic = 0x58443242;  // XD2B
inline constexpr uint32_t kDir2DataMagic = 0x58443244;   // XD2D
inline constexpr uint32_t kDir3BlockMagic = 0x58444233;  // XDB3
inline constexpr uint32_t kDir3DataMagic = 0x58444433;   // XDD3
inline constexpr uint16_t kAttrLeafMagic = 0xfbee;
inline constexpr uint16_t kAttr3LeafMagic = 0x3bee;
inline constexpr uint16_t kDaNodeMagic = 0xfebe;
inline constexpr uint16_t kDa3NodeMagic = 0x3ebe;
inline constexpr uint32_t kAttr3RemoteMagic = 0x5841524d;  // XARM
inline constexpr uint32_t kSymlinkMagic = 0x58534c4d;      // XSLM
inline constexpr uint32_t kLogHeaderMagic = 0xfeedbabe;

// Inode fork formats (di_format, di_aformat).
enum ForkFormat : uint8_t { kFmtDev = 0, kFmtLocal = 1, kFmtExtents = 2, kFmtBtree = 3 };

// di_flags / di_flags2 bits that change how the inode is read.
inline constexpr uint16_t kDiFlagRealtime = 0x1;
inline constexpr uint64_t kDiFlag2Bigtime = 0x8;
inline constexpr uint64_t kDiFlag2Nrext64 = 0x10;

// Attribute entry flags (namespaces).
inline constexpr uint8_t kAttrLocal = 0x01;
inline constexpr uint8_t kAttrRoot = 0x02;     // trusted.
inline constexpr uint8_t kAttrSecure = 0x04;   // security.
inline constexpr uint8_t kAttrParent = 0x08;   // parent pointers: not a user-visible xattr
inline constexpr uint8_t kAttrIncomplete = 0x80;

// Directory entries hold data blocks below this byte offset of the file
// (leaf and free-index blocks live above it).
inline constexpr uint64_t kDirLeafOffset = 32ull << 30;

// The superblock, read once and checked: every size the reader computes
// from it is bounded by what mkfs.xfs and the kernel accept.
struct Superblock {
  uint32_t block_size = 0;
  uint8_t block_log = 0;
  uint64_t dblocks = 0;
  uint32_t agblocks = 0;
  uint32_t agcount = 0;
  uint8_t agblklog = 0;
  uint32_t sect_size = 0;
  uint32_t inode_size = 0;
  uint8_t inopblog = 0;
  uint32_t dir_block_size = 0;   // block_size << dirblklog
  uint64_t root_ino = 0;
  uint64_t log_start = 0;        // fsblock of the internal log, 0 if external
  uint32_t log_blocks = 0;
  bool v5 = false;
  bool ftype = false;            // directory entries carry the file type
  bool nrext64 = false;
  uint64_t icount = 0;
  uint64_t ifree = 0;
  uint64_t fdblocks = 0;
  unsigned char meta_uuid[16] = {};  // what v5 metadata blocks carry
  uint32_t versionnum = 0;
  uint32_t features2 = 0;
  uint32_t incompat = 0;
  uint32_t ro_compat = 0;
  uint32_t log_incompat = 0;
};

// Reads and checks the primary superblock and every AG's AGF/AGI header
// (magic, sequence number, v5 CRCs). Throws Error(EIO) naming `name` and the
// field at fault; Error(EOPNOTSUPP) for an incompatible feature we cannot
// read (realtime-only layouts are fine: realtime files fail on open).
Superblock read_superblock(const BlockDevice& device, const std::string& name);

}  // namespace sendense::xfs
