// CRC-32C (Castagnoli), as XFS v5 uses it for every self-describing block.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sendense::xfs {

// crc32c of `data` continuing from `crc` (raw register, no final inversion).
uint32_t crc32c(uint32_t crc, const unsigned char* data, size_t length);

// True if the little-endian CRC stored at `crc_offset` inside `block` is
// ~crc32c(~0, block with those 4 bytes read as zero): XFS's block checksum.
bool verify_xfs_crc(const unsigned char* block, size_t length, size_t crc_offset);

}  // namespace sendense::xfs
