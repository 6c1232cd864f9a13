// The CRC-32 variants on-disk formats use, in their "raw" form: no initial
// or final inversion, the caller passes the seed (jbd2 seeds with ~0 and
// never inverts the result, like the kernel's crc32c()/crc32_be(); LVM seeds
// crc32_le with its own constant; GPT is the zlib CRC, ~crc32_le(~0, ...)).
// One place for all of them: every reader checks checksums with these.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sendense {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
uint32_t crc32c(uint32_t crc, const void* data, size_t length);

// CRC-32 IEEE 802.3, reflected (polynomial 0xEDB88320), as zlib/UEFI/LVM.
uint32_t crc32_le(uint32_t crc, const void* data, size_t length);

// CRC-32 big-endian (polynomial 0x04C11DB7, most significant bit first).
uint32_t crc32_be(uint32_t crc, const void* data, size_t length);

}  // namespace sendense
