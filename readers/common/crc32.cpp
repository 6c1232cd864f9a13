#include "readers/common/crc32.h"

#include <array>

namespace sendense {

namespace {

// Slicing-by-8 would be faster; one table keeps a 128 MiB journal scan well
// under a second already.
constexpr std::array<uint32_t, 256> make_reflected_table(uint32_t poly) {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr std::array<uint32_t, 256> make_msb_table(uint32_t poly) {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i << 24;
    for (int k = 0; k < 8; ++k) c = (c & 0x80000000u) ? (c << 1) ^ poly : c << 1;
    t[i] = c;
  }
  return t;
}

constexpr auto kCrc32cTable = make_reflected_table(0x82F63B78u);
constexpr auto kCrc32BeTable = make_msb_table(0x04C11DB7u);

}  // namespace

uint32_t crc32c(uint32_t crc, const void* data, size_t length) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < length; ++i) crc = kCrc32cTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

uint32_t crc32_be(uint32_t crc, const void* data, size_t length) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < length; ++i) crc = kCrc32BeTable[((crc >> 24) ^ p[i]) & 0xff] ^ (crc << 8);
  return crc;
}

}  // namespace sendense
