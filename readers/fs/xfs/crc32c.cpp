#include "readers/fs/xfs/crc32c.h"

#include <array>

namespace sendense::xfs {

namespace {

// Slicing-by-8 tables for the reflected polynomial 0x82F63B78.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i)
    for (size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  return t;
}

const Tables& tables() {
  static const Tables t = make_tables();
  return t;
}

}  // namespace

uint32_t crc32c(uint32_t crc, const unsigned char* p, size_t n) {
  const Tables& t = tables();
  while (n >= 8) {
    const uint32_t lo = crc ^ (uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24);
    const uint32_t hi = uint32_t{p[4]} | uint32_t{p[5]} << 8 | uint32_t{p[6]} << 16 | uint32_t{p[7]} << 24;
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^
          t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xff];
  return crc;
}

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
