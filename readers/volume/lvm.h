// LVM2 in userspace, without device-mapper: PV labels and metadata areas
// are read from the volumes of a backup's disks, the VG text metadata is
// parsed and validated, and each readable LV (linear and striped segments)
// becomes a BlockDevice assembled from slices of its PVs. Everything read
// here is guest data: every size, count and offset is checked before use.
//
// On-disk layout (lvm2 lib/format_text/layout.h, lib/label/label.h):
//   sector 0..3: label header "LABELONE", sector number, CRC, "LVM2 001",
//                then the PV header (uuid, device size, lists of data and
//                metadata areas as (offset, size) pairs ending with zeros);
//   each metadata area: a 512-byte header (CRC, magic " LVM2 x[5A%r0N*>",
//                version 1, its own start and size, raw_locn slots), then a
//                circular buffer holding the committed metadata text at
//                raw_locn.offset (wrapping to just after the header).
// Checksums are LVM's CRC-32 (reflected 0xedb88320) seeded with
// 0xf597a6cf and without the final inversion.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "readers/block/block_device.h"

namespace sendense {

inline constexpr uint32_t kLvmCrcSeed = 0xf597a6cf;

// Metadata text kept in memory: per PV label (all its areas together; LVM
// writes at most two copies of a text of at most a few MiB) and for all the
// labels of one backup. Metadata areas may overlap, so without these a PV of
// a few MiB could name the same text eight times, and every partition of
// every disk could be such a PV: gigabytes read and held at discovery.
inline constexpr uint64_t kLvmMaxLabelText = 16u << 20;
inline constexpr uint64_t kLvmMaxBackupText = 64u << 20;
uint32_t lvm_crc(uint32_t seed, std::span<const std::byte> data);

// What a PV label holds. uuid is the 32 characters stored on disk (the
// metadata writes it with dashes: "YUfZNu-fvbV-..."; compare without them).
struct LvmLabel {
  std::string uuid;
  uint64_t device_size = 0;
  std::vector<std::string> metadata;  // the committed text of each usable metadata area
  std::vector<std::string> problems;  // metadata areas skipped: bad CRC, bad magic, out of range
};

// Reads the label and every metadata area of `pv` (the text of areas past
// kLvmMaxLabelText in total is a `problem`, not read). std::nullopt if no
// sector 0..3 holds "LABELONE". Throws Error(EIO) naming `pv` if the label
// is there but damaged (CRC, header outside its sector, area lists that do
// not end). A damaged metadata area is a `problem`, not an exception: other
// copies (on this or another PV) may be fine.
std::optional<LvmLabel> read_lvm_label(const BlockDevice& pv);

// One VG as its metadata text describes it. Sizes in the units LVM writes:
// extent_size, pe_start and dev_size in 512-byte sectors.
struct LvmStripe {
  size_t pv = 0;        // index into LvmVgMetadata::pvs
  uint64_t first_pe = 0;
};
struct LvmSegment {
  uint64_t start_extent = 0;
  uint64_t extent_count = 0;
  std::string type;                 // "striped" (linear = one stripe), "thin", "raid1", ...
  uint64_t stripe_size = 0;         // sectors; striped with more than one stripe only
  std::vector<LvmStripe> stripes;   // "striped" only
};
struct LvmLvMetadata {
  std::string name;
  bool visible = false;             // status holds "VISIBLE" (pool data/metadata LVs do not)
  bool snapshot_store = false;      // the copy-on-write store of a (classic) snapshot: its
                                    // extents hold exception tables, not a filesystem
  std::vector<LvmSegment> segments; // sorted by start_extent, contiguous from 0
  // "linear", "striped", "snapshot" for a snapshot store, or the first other segment type.
  std::string type() const;
};
struct LvmPvMetadata {
  std::string key;                  // "pv0"
  std::string uuid;                 // without dashes
  uint64_t pe_start = 0;
  uint64_t pe_count = 0;
  bool missing = false;             // flagged MISSING in the metadata
};
struct LvmVgMetadata {
  std::string name;
  std::string id;
  uint64_t seqno = 0;
  uint64_t extent_size = 0;
  std::vector<LvmPvMetadata> pvs;
  std::vector<LvmLvMetadata> lvs;
};

// Parses and validates one VG's metadata text: names in LVM's character set,
// extent size > 0, striped segments whose stripes name a PV of the VG and
// stay inside its pe_count, segments contiguous, no two LVs sharing an
// extent, counts within limits. Throws Error(EIO) naming `where` and the
// structure at fault.
LvmVgMetadata parse_lvm_metadata(std::string_view text, const std::string& where);

// "lvm-<vg>-<lv>" with every '-' inside the VG and LV names doubled, as
// device-mapper names them ("my-vg"/"root" -> "lvm-my--vg-root").
std::string lvm_volume_name(const std::string& vg, const std::string& lv);

// A candidate PV: a volume of one of the backup's disks.
struct LvmPvCandidate {
  BlockDevicePtr device;
  std::string name;  // the volume's name in the backup ("part2", "disk1-part2"), for messages
};

struct LvmLogicalVolume {
  std::string vg;
  std::string name;
  std::string volume_name;  // lvm_volume_name(vg, name)
  std::string type;         // LvmLvMetadata::type()
  uint64_t size = 0;        // bytes
  std::string problem;      // "" when readable, else why not ("thin: not supported yet", "PV ... missing")
  BlockDevicePtr device;    // null unless readable
};

struct LvmPvFound {
  size_t candidate = 0;     // index into the candidates
  std::string vg;           // "" if its VG could not be read
};

struct LvmAssembly {
  std::vector<LvmLogicalVolume> lvs;   // visible LVs of every readable VG, by VG then metadata order
  std::vector<LvmPvFound> pvs;         // every candidate holding a PV label
  std::vector<std::string> errors;     // "what: reason" for labels and VGs that could not be used
};

// Reads the labels of `candidates` (those without one are ignored; a label
// whose texts would take the backup past kLvmMaxBackupText is an `error` and
// its metadata is not used), picks
// for each VG id the metadata copy with the highest seqno, matches its PVs
// by uuid among the candidates, and builds each visible LV. Never throws for
// damaged guest data: a VG that cannot be used is an `error` and has no LVs.
LvmAssembly assemble_lvm(const std::vector<LvmPvCandidate>& candidates);

}  // namespace sendense
