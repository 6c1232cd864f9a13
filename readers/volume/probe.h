// Private helpers shared by the volume readers: little-endian field access
// on byte buffers and bounded reads. Not part of the contract (volume.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "readers/block/block_device.h"

namespace sendense::volume_detail {

inline constexpr uint64_t kSectorSize = 512;

inline uint8_t u8(std::span<const std::byte> b, size_t off) { return static_cast<uint8_t>(b[off]); }

inline uint16_t le16(std::span<const std::byte> b, size_t off) {
  return static_cast<uint16_t>(u8(b, off) | (u8(b, off + 1) << 8));
}

inline uint32_t le32(std::span<const std::byte> b, size_t off) {
  return static_cast<uint32_t>(le16(b, off)) | (static_cast<uint32_t>(le16(b, off + 2)) << 16);
}

inline uint64_t le64(std::span<const std::byte> b, size_t off) {
  return static_cast<uint64_t>(le32(b, off)) | (static_cast<uint64_t>(le32(b, off + 4)) << 32);
}

inline uint32_t be32(std::span<const std::byte> b, size_t off) {
  return (static_cast<uint32_t>(u8(b, off)) << 24) | (static_cast<uint32_t>(u8(b, off + 1)) << 16) |
         (static_cast<uint32_t>(u8(b, off + 2)) << 8) | static_cast<uint32_t>(u8(b, off + 3));
}

// True if the bytes at `off` equal `magic` (the caller guarantees the range).
inline bool has_bytes(std::span<const std::byte> b, size_t off, std::string_view magic) {
  if (off > b.size() || magic.size() > b.size() - off) return false;
  for (size_t i = 0; i < magic.size(); ++i)
    if (static_cast<char>(b[off + i]) != magic[i]) return false;
  return true;
}

// Reads [offset, offset + buf.size()) if the device is large enough and
// returns true; returns false (reading nothing) if the range does not fit.
// Throws Error(EIO) if the read itself fails.
bool read_if_fits(const BlockDevice& dev, uint64_t offset, std::span<std::byte> buf);

// Boot-sector signatures that make sector 0 look like an MBR to a naive
// parser. `sector` is the first 512 bytes of the device.
bool is_ntfs_boot_sector(std::span<const std::byte> sector);
bool is_fat_boot_sector(std::span<const std::byte> sector);

}  // namespace sendense::volume_detail
