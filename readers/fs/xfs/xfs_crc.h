// XFS v5 block checksums: CRC-32C over the block with its own CRC field
// read as zero, stored little-endian and inverted.
#pragma once

#include <cstddef>

namespace sendense::xfs {

// True if the CRC stored at `crc_offset` inside `block` matches the block.
bool verify_xfs_crc(const unsigned char* block, size_t length, size_t crc_offset);

}  // namespace sendense::xfs
