// PV labels and metadata areas (layout in lvm.h). Only the first raw_locn
// slot of a metadata area holds the committed metadata; the others are
// unused by the text format.
#include <array>
#include <cstring>

#include "readers/common/crc32.h"
#include "readers/common/error.h"
#include "readers/volume/lvm.h"
#include "readers/volume/probe.h"

namespace sendense {

using namespace volume_detail;

namespace {

constexpr size_t kLabelScanSectors = 4;
constexpr size_t kLabelCrcFrom = 20;           // the CRC covers the label sector after its own field
constexpr size_t kMdaHeaderSize = 512;
constexpr std::string_view kMdaMagic = " LVM2 x[5A%r0N*>";
constexpr uint32_t kMdaVersion = 1;
constexpr size_t kMaxAreas = 8;                // LVM writes at most 2 metadata areas per PV
constexpr uint64_t kMaxMetadataText = 16u << 20;
constexpr uint32_t kRawLocnIgnored = 0x1;

// The committed metadata text of the area at [start, start + size), or a
// problem string. The text may wrap from the end of the area back to just
// after its header.
std::string read_metadata_area(const BlockDevice& pv, uint64_t start, uint64_t size, uint64_t budget,
                               std::string& text) {
  std::array<std::byte, kMdaHeaderSize> h{};
  if (size < 2 * kMdaHeaderSize) return "metadata area at " + std::to_string(start) + " too small";
  if (!read_if_fits(pv, start, h) || size > pv.size() - start)
    return "metadata area at " + std::to_string(start) + " (+" + std::to_string(size) + ") past the end of the PV";
  if (le32(h, 0) != lvm_crc(kLvmCrcSeed, std::span<const std::byte>(h).subspan(4)))
    return "metadata area header at " + std::to_string(start) + " has a bad checksum";
  if (!has_bytes(h, 4, kMdaMagic)) return "metadata area header at " + std::to_string(start) + " has a bad magic";
  if (le32(h, 20) != kMdaVersion)
    return "metadata area at " + std::to_string(start) + " has version " + std::to_string(le32(h, 20));
  if (le64(h, 24) != start || le64(h, 32) != size)
    return "metadata area header at " + std::to_string(start) + " disagrees with the PV header on its place";
  const uint64_t offset = le64(h, 40);
  const uint64_t length = le64(h, 48);
  const uint32_t checksum = le32(h, 56);
  const uint32_t flags = le32(h, 60);
  if (offset == 0 && length == 0) return "";  // an empty area: no metadata written yet
  if (flags & kRawLocnIgnored) return "";      // marked ignored by pvchange --metadataignore
  if (offset < kMdaHeaderSize || offset >= size || length == 0 || length > size - kMdaHeaderSize ||
      length > kMaxMetadataText)
    return "metadata area at " + std::to_string(start) + ": text location (" + std::to_string(offset) + ", " +
           std::to_string(length) + ") outside the area";
  if (length > budget)
    return "metadata area at " + std::to_string(start) + ": its text of " + std::to_string(length) +
           " bytes would take the label's metadata past " + std::to_string(kLvmMaxLabelText) + " bytes: not read";
  const uint64_t first = std::min(length, size - offset);
  std::string buf(static_cast<size_t>(length), '\0');
  auto bytes = std::as_writable_bytes(std::span(buf.data(), buf.size()));
  pv.read_at(start + offset, bytes.first(static_cast<size_t>(first)));
  if (first < length) pv.read_at(start + kMdaHeaderSize, bytes.subspan(static_cast<size_t>(first)));
  if (lvm_crc(kLvmCrcSeed, bytes) != checksum)
    return "metadata text in the area at " + std::to_string(start) + " has a bad checksum";
  text = std::move(buf);
  return "";
}

}  // namespace

uint32_t lvm_crc(uint32_t seed, std::span<const std::byte> data) { return crc32_le(seed, data.data(), data.size()); }

std::optional<LvmLabel> read_lvm_label(const BlockDevice& pv) {
  std::array<std::byte, kLabelScanSectors * kSectorSize> head{};
  const size_t sectors = static_cast<size_t>(std::min<uint64_t>(pv.size() / kSectorSize, kLabelScanSectors));
  if (sectors == 0) return std::nullopt;
  pv.read_at(0, std::span(head).first(sectors * kSectorSize));
  for (size_t s = 0; s < sectors; ++s) {
    const auto sector = std::span<const std::byte>(head).subspan(s * kSectorSize, kSectorSize);
    if (!has_bytes(sector, 0, "LABELONE")) continue;
    const std::string where = pv.describe() + " LVM label in sector " + std::to_string(s);
    if (le64(sector, 8) != s) throw Error(EIO, "label says it is in sector " + std::to_string(le64(sector, 8)), where);
    if (le32(sector, 16) != lvm_crc(kLvmCrcSeed, sector.subspan(kLabelCrcFrom)))
      throw Error(EIO, "label has a bad checksum", where);
    if (!has_bytes(sector, 24, "LVM2 001")) throw Error(EIO, "label type is not LVM2 001", where);
    const uint32_t header = le32(sector, 20);
    // uuid (32) + device size (8) + at least the two list terminators (32).
    if (header < 32 || header > kSectorSize - 72) throw Error(EIO, "PV header outside the label sector", where);
    LvmLabel label;
    for (size_t i = 0; i < 32; ++i) label.uuid += static_cast<char>(sector[header + i]);
    label.device_size = le64(sector, header + 32);
    size_t pos = header + 40;
    // Two lists of (offset, size) pairs, each ended by a zero offset: data
    // areas first (read past: the VG metadata places the extents), then
    // metadata areas.
    std::vector<std::pair<uint64_t, uint64_t>> lists[2];
    for (auto& list : lists) {
      while (true) {
        if (pos + 16 > kSectorSize) throw Error(EIO, "PV header area list runs past the label sector", where);
        const uint64_t off = le64(sector, pos);
        const uint64_t size = le64(sector, pos + 8);
        pos += 16;
        if (off == 0) break;
        if (list.size() >= kMaxAreas) throw Error(EIO, "PV header lists more than " + std::to_string(kMaxAreas) + " areas", where);
        list.emplace_back(off, size);
      }
    }
    uint64_t budget = kLvmMaxLabelText;
    for (const auto& [off, size] : lists[1]) {
      std::string text;
      std::string problem = read_metadata_area(pv, off, size, budget, text);
      budget -= text.size();
      if (!problem.empty()) label.problems.push_back(pv.describe() + ": " + problem);
      else if (!text.empty()) label.metadata.push_back(std::move(text));
    }
    return label;
  }
  return std::nullopt;
}

}  // namespace sendense
