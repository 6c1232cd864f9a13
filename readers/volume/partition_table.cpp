// Partition tables: MBR (primaries and the EBR chain of logical partitions)
// and GPT (primary header, or the backup at the last LBA when the primary is
// damaged). 512-byte sectors. Every field is guest data: each offset and
// count is bounds-checked before use, and a damaged table throws Error(EIO)
// naming the disk and saying what is wrong.
//
// Formats: UEFI spec 2.x chapter 5 (GPT), the classic IBM PC MBR/EBR layout
// as read by util-linux libfdisk and the Linux kernel's block/partitions/.
#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>
#include <set>
#include <vector>

#include "readers/common/crc32.h"
#include "readers/common/error.h"
#include "readers/volume/probe.h"
#include "readers/volume/volume.h"

namespace sendense {

using namespace volume_detail;

namespace {

constexpr uint8_t kGptProtective = 0xEE;
constexpr size_t kMaxLogicals = 128;              // per extended partition
constexpr uint32_t kGptMaxEntries = 8192;
constexpr uint32_t kGptMaxEntrySize = 4096;
constexpr uint64_t kGptMaxEntriesBytes = 1u << 20;  // 1 MiB of entries at most
constexpr size_t kGptNameBytes = 72;              // 36 UTF-16LE code units

bool is_extended_type(uint8_t t) { return t == 0x05 || t == 0x0F || t == 0x85; }

[[noreturn]] void damaged(const BlockDevice& disk, const std::string& what) { throw Error(EIO, what, disk.describe()); }

// The CRC32 of the UEFI spec (zlib's).
uint32_t crc32(std::span<const std::byte> data) { return ~crc32_le(~0u, data.data(), data.size()); }

// ---- text -------------------------------------------------------------------

std::string hex_type(uint8_t t) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", t);
  return buf;
}

// A GUID as util-linux prints it: the first three fields little-endian.
std::string guid_text(std::span<const std::byte> g) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", le32(g, 0), le16(g, 4),
                le16(g, 6), u8(g, 8), u8(g, 9), u8(g, 10), u8(g, 11), u8(g, 12), u8(g, 13), u8(g, 14), u8(g, 15));
  return buf;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// UTF-16LE up to the first NUL; unpaired surrogates become U+FFFD.
std::string utf16le_to_utf8(std::span<const std::byte> in) {
  std::string out;
  const size_t units = in.size() / 2;
  for (size_t i = 0; i < units; ++i) {
    uint32_t u = le16(in, 2 * i);
    if (u == 0) break;
    if (u >= 0xD800 && u <= 0xDBFF && i + 1 < units) {
      const uint32_t low = le16(in, 2 * (i + 1));
      if (low >= 0xDC00 && low <= 0xDFFF) {
        append_utf8(out, 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00));
        ++i;
        continue;
      }
    }
    if (u >= 0xD800 && u <= 0xDFFF) u = 0xFFFD;
    append_utf8(out, u);
  }
  return out;
}

std::string sectors_text(uint64_t first, uint64_t end) {
  return "sectors [" + std::to_string(first) + ", " + std::to_string(end) + ")";
}

// ---- checks shared by both schemes -----------------------------------------

struct Entry {
  Partition p;
  uint64_t first_lba = 0;
  uint64_t end_lba = 0;       // exclusive
  bool container = false;     // an MBR extended partition
  uint32_t container_of = 0;  // for a logical: the number of its extended partition
};

void check_inside_disk(const BlockDevice& disk, uint64_t disk_sectors, const Entry& e) {
  if (e.end_lba > disk_sectors)
    damaged(disk, "partition " + std::to_string(e.p.number) + " (" + sectors_text(e.first_lba, e.end_lba) +
                      ") extends past the end of the disk (" + std::to_string(disk_sectors) + " sectors, " +
                      std::to_string(disk.size()) + " bytes)");
}

void check_no_overlap(const BlockDevice& disk, const std::vector<Entry>& entries) {
  for (size_t i = 0; i < entries.size(); ++i) {
    for (size_t j = i + 1; j < entries.size(); ++j) {
      const Entry& a = entries[i];
      const Entry& b = entries[j];
      // An extended partition holds its logicals by definition.
      if ((a.container && b.container_of == a.p.number) || (b.container && a.container_of == b.p.number)) continue;
      if (a.first_lba < b.end_lba && b.first_lba < a.end_lba)
        damaged(disk, "partitions " + std::to_string(a.p.number) + " (" + sectors_text(a.first_lba, a.end_lba) +
                          ") and " + std::to_string(b.p.number) + " (" + sectors_text(b.first_lba, b.end_lba) +
                          ") overlap");
    }
  }
}

PartitionTable finish(std::string scheme, std::vector<Entry> entries, std::vector<std::string> warnings) {
  PartitionTable t;
  t.scheme = std::move(scheme);
  t.warnings = std::move(warnings);
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.p.number < b.p.number; });
  for (Entry& e : entries) t.partitions.push_back(std::move(e.p));
  return t;
}

// ---- MBR --------------------------------------------------------------------

struct MbrEntry {
  uint8_t status = 0;
  uint8_t type = 0;
  uint32_t start = 0;    // LBA, relative to whatever the table says
  uint32_t sectors = 0;
  bool empty() const { return type == 0 || sectors == 0; }
};

MbrEntry mbr_entry(std::span<const std::byte> sector, int index) {
  const size_t off = 446 + 16 * static_cast<size_t>(index);
  return MbrEntry{u8(sector, off), u8(sector, off + 4), le32(sector, off + 8), le32(sector, off + 12)};
}

bool has_boot_signature(std::span<const std::byte> sector) { return u8(sector, 510) == 0x55 && u8(sector, 511) == 0xAA; }

// True if the four primary slots look like a partition table: boot flags are
// 0x00 or 0x80 and at least one slot is in use.
bool looks_like_mbr(std::span<const std::byte> sector0) {
  if (!has_boot_signature(sector0)) return false;
  bool any = false;
  for (int i = 0; i < 4; ++i) {
    const MbrEntry e = mbr_entry(sector0, i);
    if (e.status != 0x00 && e.status != 0x80) return false;
    if (!e.empty()) any = true;
  }
  return any;
}

void read_logicals(const BlockDevice& disk, const Entry& extended, uint32_t& next_number, std::vector<Entry>& out,
                   std::vector<std::string>& warnings) {
  const uint64_t ext_start = extended.first_lba;
  const uint64_t ext_end = extended.end_lba;
  const std::string ext_name = "extended partition " + std::to_string(extended.p.number);
  std::set<uint64_t> visited;
  uint64_t ebr = ext_start;
  for (size_t links = 0;; ++links) {
    if (links >= kMaxLogicals)
      damaged(disk, ext_name + ": the chain of logical partitions is longer than " + std::to_string(kMaxLogicals) +
                        " links");
    if (!visited.insert(ebr).second)
      damaged(disk, ext_name + ": the chain of logical partitions loops back to the EBR at sector " +
                        std::to_string(ebr));
    if (ebr < ext_start || ebr >= ext_end)
      damaged(disk, ext_name + " (" + sectors_text(ext_start, ext_end) + "): an EBR link points to sector " +
                        std::to_string(ebr) + ", outside it");
    std::array<std::byte, kSectorSize> sector{};
    disk.read_at(ebr * kSectorSize, sector);  // inside the extended partition, which is inside the disk
    if (!has_boot_signature(sector)) {
      warnings.push_back(ext_name + ": the EBR at sector " + std::to_string(ebr) +
                         " has no 0x55AA signature; no more logical partitions read");
      return;
    }
    const MbrEntry data = mbr_entry(sector, 0);
    const MbrEntry link = mbr_entry(sector, 1);
    if (!data.empty() && !is_extended_type(data.type)) {
      Entry e;
      e.p.number = next_number++;
      e.first_lba = ebr + data.start;
      e.end_lba = e.first_lba + data.sectors;
      e.p.offset = e.first_lba * kSectorSize;
      e.p.length = uint64_t{data.sectors} * kSectorSize;
      e.p.type = hex_type(data.type);
      e.container_of = extended.p.number;
      if (data.start == 0)
        damaged(disk, "partition " + std::to_string(e.p.number) + " starts on its own EBR (sector " +
                          std::to_string(ebr) + ")");
      if (e.end_lba > ext_end)
        damaged(disk, "partition " + std::to_string(e.p.number) + " (" + sectors_text(e.first_lba, e.end_lba) +
                          ") extends past the end of " + ext_name + " (" + sectors_text(ext_start, ext_end) + ")");
      out.push_back(std::move(e));
    }
    if (link.empty() || !is_extended_type(link.type)) return;
    ebr = ext_start + link.start;
  }
}

PartitionTable read_mbr(const BlockDevice& disk, std::span<const std::byte> sector0,
                        std::vector<std::string> warnings) {
  const uint64_t disk_sectors = disk.size() / kSectorSize;
  std::vector<Entry> entries;
  for (int i = 0; i < 4; ++i) {
    const MbrEntry m = mbr_entry(sector0, i);
    if (m.empty()) continue;
    Entry e;
    e.p.number = static_cast<uint32_t>(i + 1);
    e.first_lba = m.start;
    e.end_lba = uint64_t{m.start} + m.sectors;
    e.p.offset = e.first_lba * kSectorSize;
    e.p.length = uint64_t{m.sectors} * kSectorSize;
    e.p.type = hex_type(m.type);
    e.container = is_extended_type(m.type);
    if (m.start == 0)
      damaged(disk, "partition " + std::to_string(e.p.number) + " starts at sector 0, over the partition table");
    check_inside_disk(disk, disk_sectors, e);
    entries.push_back(std::move(e));
  }
  // Primaries are checked first: an extended partition is known to lie
  // inside the disk before its chain is read.
  check_no_overlap(disk, entries);
  uint32_t next_number = 5;
  const size_t primaries = entries.size();
  for (size_t i = 0; i < primaries; ++i) {
    if (!entries[i].container) continue;
    const Entry extended = entries[i];  // copy: `entries` grows below
    read_logicals(disk, extended, next_number, entries, warnings);
  }
  check_no_overlap(disk, entries);
  return finish("mbr", std::move(entries), std::move(warnings));
}

// ---- GPT --------------------------------------------------------------------

struct GptHeader {
  uint64_t lba = 0;
  uint64_t alternate_lba = 0;
  uint64_t first_usable = 0;
  uint64_t last_usable = 0;
  uint64_t entries_lba = 0;
  uint32_t entry_count = 0;
  uint32_t entry_size = 0;
  std::vector<std::byte> entries;  // entry_count * entry_size bytes, CRC verified
};

// Reads and verifies the header at `lba` and its entry array. Returns nullopt
// with `why` set when either is damaged.
std::optional<GptHeader> read_gpt(const BlockDevice& disk, uint64_t lba, std::string& why) {
  const uint64_t disk_sectors = disk.size() / kSectorSize;
  if (lba >= disk_sectors) {
    why = "sector " + std::to_string(lba) + " is past the end of the disk";
    return std::nullopt;
  }
  std::array<std::byte, kSectorSize> sector{};
  disk.read_at(lba * kSectorSize, sector);
  if (!has_bytes(sector, 0, "EFI PART")) {
    why = "no \"EFI PART\" signature at sector " + std::to_string(lba);
    return std::nullopt;
  }
  const uint32_t header_size = le32(sector, 12);
  if (header_size < 92 || header_size > kSectorSize) {
    why = "header size " + std::to_string(header_size) + " is invalid";
    return std::nullopt;
  }
  const uint32_t stored_crc = le32(sector, 16);
  std::array<std::byte, kSectorSize> copy = sector;
  std::fill_n(copy.begin() + 16, 4, std::byte{0});
  if (crc32(std::span<const std::byte>(copy).first(header_size)) != stored_crc) {
    why = "header checksum mismatch at sector " + std::to_string(lba);
    return std::nullopt;
  }
  GptHeader h;
  h.lba = lba;
  h.alternate_lba = le64(sector, 32);
  h.first_usable = le64(sector, 40);
  h.last_usable = le64(sector, 48);
  h.entries_lba = le64(sector, 72);
  h.entry_count = le32(sector, 80);
  h.entry_size = le32(sector, 84);
  const uint32_t entries_crc = le32(sector, 88);
  if (le64(sector, 24) != lba) {
    why = "header at sector " + std::to_string(lba) + " says it is at sector " + std::to_string(le64(sector, 24));
    return std::nullopt;
  }
  if (h.entry_size < 128 || h.entry_size > kGptMaxEntrySize || h.entry_size % 8 != 0) {
    why = "partition entry size " + std::to_string(h.entry_size) + " is invalid";
    return std::nullopt;
  }
  if (h.entry_count == 0 || h.entry_count > kGptMaxEntries) {
    why = "partition entry count " + std::to_string(h.entry_count) + " is invalid";
    return std::nullopt;
  }
  const uint64_t bytes = uint64_t{h.entry_count} * h.entry_size;
  if (bytes > kGptMaxEntriesBytes) {
    why = "partition entry array of " + std::to_string(bytes) + " bytes is too large";
    return std::nullopt;
  }
  const uint64_t entry_sectors = (bytes + kSectorSize - 1) / kSectorSize;
  if (h.entries_lba < 1 || h.entries_lba >= disk_sectors || entry_sectors > disk_sectors - h.entries_lba) {
    why = "partition entry array at sector " + std::to_string(h.entries_lba) + " lies outside the disk";
    return std::nullopt;
  }
  h.entries.resize(bytes);
  disk.read_at(h.entries_lba * kSectorSize, h.entries);
  if (crc32(h.entries) != entries_crc) {
    why = "partition entry array checksum mismatch (array at sector " + std::to_string(h.entries_lba) + ")";
    return std::nullopt;
  }
  return h;
}

PartitionTable parse_gpt(const BlockDevice& disk, std::vector<std::string> warnings) {
  const uint64_t disk_sectors = disk.size() / kSectorSize;
  const uint64_t last_lba = disk_sectors == 0 ? 0 : disk_sectors - 1;
  std::string primary_why;
  std::optional<GptHeader> h = read_gpt(disk, 1, primary_why);
  if (h) {
    // The backup is not needed, but a damaged one is worth saying.
    std::string backup_why;
    const uint64_t alt = h->alternate_lba < disk_sectors ? h->alternate_lba : last_lba;
    if (!read_gpt(disk, alt, backup_why)) warnings.push_back("backup GPT header damaged (" + backup_why + ")");
  } else {
    std::string backup_why;
    h = read_gpt(disk, last_lba, backup_why);
    if (!h)
      damaged(disk, "GPT damaged: primary header (" + primary_why + ") and backup header (" + backup_why +
                        ") both unusable");
    warnings.push_back("primary GPT header damaged (" + primary_why + "), used the backup at sector " +
                       std::to_string(last_lba));
  }

  std::vector<Entry> entries;
  const std::span<const std::byte> all(h->entries);
  for (uint32_t i = 0; i < h->entry_count; ++i) {
    const auto raw = all.subspan(uint64_t{i} * h->entry_size, h->entry_size);
    const auto type_guid = raw.first(16);
    if (std::all_of(type_guid.begin(), type_guid.end(), [](std::byte b) { return b == std::byte{0}; })) continue;
    Entry e;
    e.p.number = i + 1;
    const uint64_t first = le64(raw, 32);
    const uint64_t last = le64(raw, 40);  // inclusive
    if (last < first)
      damaged(disk, "partition " + std::to_string(e.p.number) + " ends (sector " + std::to_string(last) +
                        ") before it starts (sector " + std::to_string(first) + ")");
    if (last >= disk_sectors)
      damaged(disk, "partition " + std::to_string(e.p.number) + " (sectors " + std::to_string(first) + " to " +
                        std::to_string(last) + ") extends past the end of the disk (" + std::to_string(disk_sectors) +
                        " sectors, " + std::to_string(disk.size()) + " bytes)");
    e.first_lba = first;
    e.end_lba = last + 1;
    e.p.offset = first * kSectorSize;
    e.p.length = (last - first + 1) * kSectorSize;
    e.p.type = guid_text(type_guid);
    e.p.name = utf16le_to_utf8(raw.subspan(56, kGptNameBytes));
    if (first < h->first_usable || last > h->last_usable)
      warnings.push_back("partition " + std::to_string(e.p.number) + " lies outside the usable area of the disk");
    entries.push_back(std::move(e));
  }
  check_no_overlap(disk, entries);
  return finish("gpt", std::move(entries), std::move(warnings));
}

}  // namespace

PartitionTable read_partition_table(const BlockDevice& disk) {
  PartitionTable none;
  none.scheme = "none";
  if (disk.size() < kSectorSize) return none;
  std::array<std::byte, kSectorSize> sector0{};
  disk.read_at(0, sector0);

  std::vector<std::string> warnings;
  const bool table = looks_like_mbr(sector0);
  const FsType whole = detect_filesystem(disk);
  switch (whole) {
    case FsType::ntfs:
    case FsType::fat:
    case FsType::xfs:
    case FsType::luks:
      // These own sector 0: its 0x55AA (NTFS, FAT) is a boot sector, not a table.
      return none;
    case FsType::ext2:
    case FsType::ext3:
    case FsType::ext4:
    case FsType::btrfs:
    case FsType::swap:
    case FsType::lvm_pv: {
      // Their signatures lie past sector 0. mkfs and pvcreate clear sector 0,
      // so a live partition table there means the signature is stale (the
      // disk was a whole-disk filesystem once, then partitioned).
      if (!table) return none;
      warnings.push_back(std::string("ignored a stale ") + to_string(whole) + " signature on the whole disk: sector 0 holds a partition table");
      break;
    }
    case FsType::unknown:
      break;
  }
  if (!has_boot_signature(sector0)) return none;
  if (!table) {
    // 0x55AA with no usable slots: an empty table, or boot code and no table.
    bool bad_flags = false;
    for (int i = 0; i < 4; ++i) {
      const uint8_t status = mbr_entry(sector0, i).status;
      if (status != 0x00 && status != 0x80) bad_flags = true;
    }
    if (bad_flags) {
      none.warnings.push_back("sector 0 has a 0x55AA signature but no valid partition table");
      return none;
    }
    PartitionTable empty;
    empty.scheme = "mbr";
    return empty;
  }
  for (int i = 0; i < 4; ++i)
    if (mbr_entry(sector0, i).type == kGptProtective) return parse_gpt(disk, std::move(warnings));
  return read_mbr(disk, sector0, std::move(warnings));
}

}  // namespace sendense
