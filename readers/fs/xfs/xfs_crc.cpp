#include "readers/fs/xfs/xfs_crc.h"

#include <cstdint>

#include "readers/common/crc32.h"

namespace sendense::xfs {

bool verify_xfs_crc(const unsigned char* block, size_t length, size_t crc_offset) {
  if (crc_offset + 4 > length) return false;
  static const unsigned char zero[4] = {0, 0, 0, 0};
  uint32_t crc = crc32c(0xffffffffu, block, crc_offset);
  crc = crc32c(crc, zero, 4);
  crc = crc32c(crc, block + crc_offset + 4, length - crc_offset - 4);
  crc = ~crc;
  const uint32_t stored = uint32_t{block[crc_offset]} | uint32_t{block[crc_offset + 1]} << 8 |
                          uint32_t{block[crc_offset + 2]} << 16 | uint32_t{block[crc_offset + 3]} << 24;
  return crc == stored;
}

}  // namespace sendense::xfs
