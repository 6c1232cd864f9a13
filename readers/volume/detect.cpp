// Filesystem and container detection by on-disk signature only. The rules
// follow libblkid's probes (util-linux libblkid/src/superblocks/) in spirit;
// every field read here is guest data, so each probe checks that the device
// is large enough and never trusts a size or offset from the image.
#include <algorithm>
#include <array>

#include "readers/common/error.h"
#include "readers/volume/probe.h"
#include "readers/volume/volume.h"

namespace sendense {

using namespace volume_detail;

namespace volume_detail {

bool read_if_fits(const BlockDevice& dev, uint64_t offset, std::span<std::byte> buf) {
  const uint64_t size = dev.size();
  if (offset > size || buf.size() > size - offset) return false;
  dev.read_at(offset, buf);
  return true;
}

bool is_ntfs_boot_sector(std::span<const std::byte> s) {
  if (s.size() < 512 || !has_bytes(s, 3, "NTFS    ")) return false;
  const uint16_t bytes_per_sector = le16(s, 11);
  // NTFS allows 256..4096 bytes per sector; blkid requires a power of two.
  return bytes_per_sector >= 256 && bytes_per_sector <= 4096 && (bytes_per_sector & (bytes_per_sector - 1)) == 0;
}

bool is_fat_boot_sector(std::span<const std::byte> s) {
  if (s.size() < 512) return false;
  if (u8(s, 510) != 0x55 || u8(s, 511) != 0xAA) return false;
  // x86 jump to the boot code: EB xx 90 or E9 xx xx.
  const uint8_t jump = u8(s, 0);
  if (!((jump == 0xEB && u8(s, 2) == 0x90) || jump == 0xE9)) return false;
  const uint16_t bytes_per_sector = le16(s, 11);
  if (bytes_per_sector < 512 || bytes_per_sector > 4096 || (bytes_per_sector & (bytes_per_sector - 1)) != 0)
    return false;
  const uint8_t sectors_per_cluster = u8(s, 13);
  if (sectors_per_cluster == 0 || (sectors_per_cluster & (sectors_per_cluster - 1)) != 0) return false;
  if (le16(s, 14) == 0) return false;  // reserved sectors (the boot sector itself)
  const uint8_t fats = u8(s, 16);
  if (fats == 0 || fats > 4) return false;
  const uint8_t media = u8(s, 21);
  if (media != 0xF0 && media < 0xF8) return false;
  // FAT12/16 name their type at 54, FAT32 at 82 (both after boot signature 0x29/0x28).
  return has_bytes(s, 54, "FAT") || has_bytes(s, 82, "FAT");
}

}  // namespace volume_detail

namespace {

// ext2/3/4 feature bits (e2fsprogs lib/ext2fs/ext2_fs.h).
constexpr uint32_t kCompatHasJournal = 0x0004;
constexpr uint32_t kIncompatJournalDev = 0x0008;
// What ext3 understands; anything else makes it ext4 (libblkid ext.c).
constexpr uint32_t kExt3RoCompatSupported = 0x0001 | 0x0002 | 0x0004;   // sparse_super, large_file, btree_dir
constexpr uint32_t kExt3IncompatSupported = 0x0002 | 0x0004 | 0x0010;   // filetype, recover, meta_bg

FsType probe_ext(const BlockDevice& dev) {
  std::array<std::byte, 1024> sb{};
  if (!read_if_fits(dev, 1024, sb)) return FsType::unknown;
  if (le16(sb, 56) != 0xEF53) return FsType::unknown;
  if (le32(sb, 24) > 6) return FsType::unknown;  // s_log_block_size: blocks are 1 KiB .. 64 KiB
  return classify_ext(le32(sb, 92), le32(sb, 96), le32(sb, 100));
}

bool probe_btrfs(const BlockDevice& dev) {
  std::array<std::byte, 8> magic{};
  return read_if_fits(dev, 65536 + 64, magic) && has_bytes(magic, 0, "_BHRfS_M");
}

bool probe_swap(const BlockDevice& dev) {
  // The signature ends the first page; page sizes differ by architecture.
  for (uint64_t page : {4096u, 8192u, 16384u, 32768u, 65536u}) {
    std::array<std::byte, 10> sig{};
    if (!read_if_fits(dev, page - 10, sig)) return false;
    if (has_bytes(sig, 0, "SWAPSPACE2") || has_bytes(sig, 0, "SWAP-SPACE")) return true;
  }
  return false;
}

bool probe_lvm_pv(std::span<const std::byte> head, size_t sectors) {
  for (size_t s = 0; s < sectors && s < 4; ++s) {
    auto sector = head.subspan(s * kSectorSize, kSectorSize);
    if (has_bytes(sector, 0, "LABELONE") && has_bytes(sector, 24, "LVM2 001") && le64(sector, 8) == s) return true;
  }
  return false;
}

}  // namespace

FsType classify_ext(uint32_t compat, uint32_t incompat, uint32_t ro_compat) {
  if (incompat & kIncompatJournalDev) return FsType::unknown;  // an external journal, not a filesystem
  if ((ro_compat & ~kExt3RoCompatSupported) != 0 || (incompat & ~kExt3IncompatSupported) != 0) return FsType::ext4;
  if (compat & kCompatHasJournal) return FsType::ext3;
  return FsType::ext2;
}

const char* to_string(FsType t) {
  switch (t) {
    case FsType::unknown: return "unknown";
    case FsType::ext2: return "ext2";
    case FsType::ext3: return "ext3";
    case FsType::ext4: return "ext4";
    case FsType::ntfs: return "ntfs";
    case FsType::xfs: return "xfs";
    case FsType::btrfs: return "btrfs";
    case FsType::fat: return "fat";
    case FsType::swap: return "swap";
    case FsType::lvm_pv: return "lvm-pv";
    case FsType::luks: return "luks";
  }
  return "unknown";
}

FsType detect_filesystem(const BlockDevice& dev) {
  // The first four sectors hold every sector-0 signature and the LVM label.
  std::array<std::byte, 4 * kSectorSize> head{};
  const size_t sectors = static_cast<size_t>(std::min<uint64_t>(dev.size() / kSectorSize, 4));
  if (sectors > 0) dev.read_at(0, std::span(head).first(sectors * kSectorSize));
  const auto sector0 = std::span<const std::byte>(head).first(kSectorSize);

  if (sectors >= 1) {
    // Signatures in sector 0 come first: writing one overwrites anything older there.
    if (has_bytes(sector0, 0, "LUKS\xba\xbe")) return FsType::luks;
    if (has_bytes(sector0, 0, "XFSB")) {
      const uint32_t block_size = be32(sector0, 4);
      if (block_size >= 512 && block_size <= 65536 && (block_size & (block_size - 1)) == 0) return FsType::xfs;
    }
    if (is_ntfs_boot_sector(sector0)) return FsType::ntfs;
    if (is_fat_boot_sector(sector0)) return FsType::fat;
  }
  if (probe_lvm_pv(head, sectors)) return FsType::lvm_pv;
  if (FsType ext = probe_ext(dev); ext != FsType::unknown) return ext;
  if (probe_btrfs(dev)) return FsType::btrfs;
  if (probe_swap(dev)) return FsType::swap;
  return FsType::unknown;
}

}  // namespace sendense
