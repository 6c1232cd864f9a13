#include "readers/common/crc32.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace sendense {

namespace {

// The table versions are the portable fallback; x86-64 CPUs with SSE4.2
// (all of them since 2008) compute CRC-32C with one instruction per 8 bytes.
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
constexpr auto kCrc32LeTable = make_reflected_table(0xEDB88320u);
constexpr auto kCrc32BeTable = make_msb_table(0x04C11DB7u);

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(uint32_t crc, const unsigned char* p, size_t length) {
  uint64_t c = crc;
  for (; length >= 8; p += 8, length -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  crc = static_cast<uint32_t>(c);
  for (; length > 0; ++p, --length) crc = _mm_crc32_u8(crc, *p);
  return crc;
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t crc32c(uint32_t crc, const void* data, size_t length) {
  const auto* p = static_cast<const unsigned char*>(data);
#if defined(__x86_64__)
  if (kHaveSse42) return crc32c_sse42(crc, p, length);
#endif
  for (size_t i = 0; i < length; ++i) crc = kCrc32cTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

uint32_t crc32_le(uint32_t crc, const void* data, size_t length) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < length; ++i) crc = kCrc32LeTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

uint32_t crc32_be(uint32_t crc, const void* data, size_t length) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < length; ++i) crc = kCrc32BeTable[((crc >> 24) ^ p[i]) & 0xff] ^ (crc << 8);
  return crc;
}

}  // namespace sendense
