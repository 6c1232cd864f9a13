// A disk's volumes: partition tables (MBR with logical partitions, GPT with
// its backup header), whole-disk filesystems, and what each volume holds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "readers/block/block_device.h"

namespace sendense {

// What a volume's first sectors say it holds, by signature only.
enum class FsType { unknown, ext2, ext3, ext4, ntfs, xfs, btrfs, fat, swap, lvm_pv, luks };
const char* to_string(FsType t);  // "ext4", "ntfs", "lvm-pv", "unknown", ...

// The ext flavour from the superblock's feature words, like blkid: features
// beyond ext3's make it ext4, a journal makes it ext3. An external journal
// device (incompat journal_dev) is not a filesystem: FsType::unknown. The one
// rule for detection and the ext reader's type_name().
FsType classify_ext(uint32_t compat, uint32_t incompat, uint32_t ro_compat);

// Detects the filesystem (or container) on `dev` from its superblock or boot
// sector. Never throws for unrecognised content: returns FsType::unknown.
// Throws Error(EIO) only if the device cannot be read.
FsType detect_filesystem(const BlockDevice& dev);

struct Partition {
  uint32_t number = 0;       // 1-based: MBR primaries 1-4, logicals 5+; GPT entry index + 1
  uint64_t offset = 0;       // bytes from the start of the disk
  uint64_t length = 0;       // bytes
  std::string type;          // "0x83" (MBR) or the GPT type GUID, lowercase
  std::string name;          // GPT partition name (UTF-8), "" for MBR
};

struct PartitionTable {
  std::string scheme;                  // "gpt", "mbr" or "none"
  std::vector<Partition> partitions;   // sorted by number
  std::vector<std::string> warnings;   // e.g. "primary GPT header damaged, used the backup"
};

// Reads the partition table. A disk without one (or whose sector 0 is a
// filesystem boot sector, as NTFS and FAT are) gives scheme "none" and no
// partitions. Throws Error(EIO) naming the disk for a damaged table:
// overlapping partitions, partitions past the end of the disk, a GPT whose
// both headers fail their checksums, an extended-partition chain that loops.
PartitionTable read_partition_table(const BlockDevice& disk);

struct Volume {
  std::string name;        // "part1", "part5", "disk": stable for the same disk
  uint32_t partition = 0;  // 0 for a whole-disk volume
  uint64_t offset = 0;
  uint64_t length = 0;
  FsType type = FsType::unknown;
  BlockDevicePtr device;   // a slice of the disk (or the disk itself), an LV; null if unreadable
  uint32_t disk = 0;       // index of the disk in its backup (0 for an LV, which may span disks)
  std::string note;        // what a volume without a reader is: "lvm-pv of VG ubuntu-vg",
                           // "thin LV: not supported yet", the error that made an LV unreadable
};

struct DiskLayout {
  PartitionTable table;
  std::vector<Volume> volumes;  // every partition (or the whole disk), with its type
};

// Partition table + detection of every volume.
DiskLayout discover_volumes(BlockDevicePtr disk);

// A backup's disks (one image per VM disk) and every volume they hold.
struct BackupLayout {
  std::vector<DiskLayout> disks;       // per disk, volume names as on a single disk
  std::vector<Volume> volumes;         // every volume under its name in the backup, LVs last
  std::vector<std::string> warnings;   // partition-table warnings and LVM errors, one line each
};

// Every volume of a backup, named as the tree shows it:
// - one disk: "part1", "disk" (as discover_volumes names them);
// - several disks: the same names prefixed "disk<K>-" ("disk0-part1", "disk1-disk");
// - each LV of a VG whose PVs lie on any of the disks: "lvm-<vg>-<lv>"
//   (lvm_volume_name; no disk prefix: an LV may span disks).
// A PV stays a volume of type lvm_pv (note "lvm-pv of VG <vg>"); LVs that
// cannot be read (thin, snapshot, RAID, a missing PV, ...) are volumes
// without a device whose note says why. Damaged LVM metadata is a warning
// and gives that VG no LVs; the other volumes are unaffected. Throws
// Error(EIO) naming the disk if a disk's partition table is damaged (as
// discover_volumes does).
BackupLayout discover_backup(const std::vector<BlockDevicePtr>& disks);

}  // namespace sendense
