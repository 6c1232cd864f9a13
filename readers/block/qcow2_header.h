// Private to readers/block: our own reading and validation of a qcow2
// header, done before any reader (ours, or qemu for a chain holding VMDK
// or VHDX) follows it. Every field is guest-controlled data; anything that
// could make a reader allocate a lot, read out of bounds or silently return
// wrong data is refused here.
//
// The layout (big-endian) follows qemu's docs/interop/qcow2.txt.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "readers/block/image_file.h"

namespace sendense::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;                  // "QFI\xfb"
inline constexpr uint32_t kExtEnd = 0x00000000;
inline constexpr uint32_t kExtBackingFormat = 0xe2792aca;
inline constexpr uint32_t kExtFeatureNames = 0x6803f857;
inline constexpr uint32_t kExtDataFile = 0x44415441;
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;            // qemu's QCOW_MAX_L1_SIZE
inline constexpr uint64_t kMaxVirtualSize = 1ull << 61;          // keeps offsets in off64_t range
inline constexpr uint32_t kMaxBackingNameBytes = 1023;           // as qemu

// Incompatible feature bits (v3).
inline constexpr uint64_t kIncompatDirty = 1ull << 0;
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;
inline constexpr uint64_t kIncompatDataFile = 1ull << 2;
inline constexpr uint64_t kIncompatCompressionType = 1ull << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;

struct Header {
  uint32_t version = 0;            // 2 or 3
  uint32_t cluster_bits = 0;       // 9..21
  uint64_t cluster_size = 0;
  uint64_t virtual_size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;            // entries
  uint64_t l1_table_offset = 0;
  uint64_t incompatible_features = 0;
  uint32_t header_length = 0;      // 72 for v2
  uint8_t compression_type = 0;    // v3 byte 104 when present (0 = zlib)
  std::string backing_name;        // "" when there is none
  std::string backing_format;      // from the 0xE2792ACA extension, "" if absent
  bool has_data_file_extension = false;
  uint64_t file_size = 0;
};

// True if `file` starts with the qcow2 magic "QFI\xfb".
bool has_magic(const ImageFile& file);

// Reads and structurally validates the header of `file`. Throws
// Error(EIO, ..., file.display()) for anything malformed: no qcow2 magic,
// version other than 2/3, cluster size out of range, header or extensions
// out of bounds, a backing file name out of bounds or holding NUL.
Header read_header(const ImageFile& file);

// Refuses what no reader of ours opens, with Error(EOPNOTSUPP) naming the
// feature and `path`: encryption, external data files, unknown incompatible
// features. Refuses with Error(EIO) an image marked corrupt or whose L1
// table does not fit the file or the virtual size. zstd compression and
// extended L2 entries pass: our reader reads them.
void check_openable(const Header& h, const std::string& path);

// Loads the L1 table (check_openable must have passed).
std::vector<uint64_t> read_l1_table(const ImageFile& file, const Header& h);


uint32_t load_be32(const unsigned char* p);
uint64_t load_be64(const unsigned char* p);

}  // namespace sendense::qcow2
