#include "readers/block/qcow2_header.h"


#include <algorithm>
#include <cstring>

#include "readers/common/error.h"

namespace sendense::qcow2 {

namespace {

std::string hex(uint64_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), digits[v & 0xf]);
    v >>= 4;
  } while (v != 0);
  return "0x" + s;
}

[[noreturn]] void corrupt(const std::string& what, const std::string& path) {
  throw Error(EIO, "damaged qcow2 image: " + what, path);
}

}  // namespace

uint32_t load_be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

uint64_t load_be64(const unsigned char* p) {
  return (uint64_t{load_be32(p)} << 32) | load_be32(p + 4);
}

bool has_magic(const ImageFile& file) {
  unsigned char magic[4] = {};
  return file.read_some(magic, sizeof magic, 0, "qcow2 magic") == 4 && load_be32(magic) == kMagic;
}

Header read_header(const ImageFile& file) {
  const std::string& path = file.display();
  Header h;
  h.file_size = file.size();
  if (h.file_size < 72) corrupt("file too short for a qcow2 header (" + std::to_string(h.file_size) + " bytes)", path);

  unsigned char fixed[104] = {};
  file.read_exact(fixed, std::min<uint64_t>(sizeof fixed, h.file_size), 0, "qcow2 header");
  if (load_be32(fixed) != kMagic) throw Error(EIO, "not a qcow2 image (no QFI\\xfb magic)", path);

  h.version = load_be32(fixed + 4);
  if (h.version != 2 && h.version != 3)
    throw Error(EIO, "unsupported qcow2 version " + std::to_string(h.version) + " (expected 2 or 3)", path);
  const uint64_t backing_offset = load_be64(fixed + 8);
  const uint32_t backing_size = load_be32(fixed + 16);
  h.cluster_bits = load_be32(fixed + 20);
  h.virtual_size = load_be64(fixed + 24);
  h.crypt_method = load_be32(fixed + 32);
  h.l1_size = load_be32(fixed + 36);
  h.l1_table_offset = load_be64(fixed + 40);

  if (h.cluster_bits < 9 || h.cluster_bits > 21)
    corrupt("cluster_bits " + std::to_string(h.cluster_bits) + " out of range 9..21", path);
  h.cluster_size = uint64_t{1} << h.cluster_bits;

  if (h.version == 2) {
    h.header_length = 72;
  } else {
    if (h.file_size < 104) corrupt("file too short for a version 3 header", path);
    h.incompatible_features = load_be64(fixed + 72);
    h.header_length = load_be32(fixed + 100);
    if (h.header_length < 104 || h.header_length % 8 != 0 || h.header_length > h.cluster_size)
      corrupt("header_length " + std::to_string(h.header_length) + " invalid", path);
  }

  // Everything else the header refers to lives in the first cluster.
  const uint64_t first_cluster = std::min(h.cluster_size, h.file_size);
  std::vector<unsigned char> head(first_cluster);
  file.read_exact(head.data(), head.size(), 0, "qcow2 header cluster");
  if (h.header_length > first_cluster) corrupt("header runs past the end of the file", path);
  if (h.version == 3 && h.header_length > 104) h.compression_type = head[104];

  if (backing_offset != 0 && backing_size != 0) {
    if (backing_size > kMaxBackingNameBytes)
      corrupt("backing file name length " + std::to_string(backing_size) + " exceeds " +
                  std::to_string(kMaxBackingNameBytes), path);
    if (backing_offset < h.header_length || backing_offset > first_cluster ||
        backing_size > first_cluster - backing_offset)
      corrupt("backing file name at offset " + std::to_string(backing_offset) + " (+" +
                  std::to_string(backing_size) + ") lies outside the header cluster", path);
    h.backing_name.assign(reinterpret_cast<const char*>(head.data() + backing_offset), backing_size);
    if (h.backing_name.find('\0') != std::string::npos) corrupt("backing file name holds a NUL byte", path);
  }

  // Header extensions: from the end of the header up to the backing name
  // (or the end of the first cluster).
  const uint64_t ext_limit = h.backing_name.empty() ? first_cluster : backing_offset;
  uint64_t pos = h.header_length;
  while (true) {
    if (pos + 8 > ext_limit) {
      // qemu writes the end marker; a v2 image without room for one is fine.
      break;
    }
    const uint32_t type = load_be32(head.data() + pos);
    const uint32_t len = load_be32(head.data() + pos + 4);
    pos += 8;
    if (type == kExtEnd) break;
    if (len > ext_limit - pos)
      corrupt("header extension " + hex(type) + " of " + std::to_string(len) + " bytes runs past the header", path);
    const char* data = reinterpret_cast<const char*>(head.data() + pos);
    if (type == kExtBackingFormat) {
      h.backing_format.assign(data, len);
      if (h.backing_format.find('\0') != std::string::npos)
        h.backing_format.resize(h.backing_format.find('\0'));
    } else if (type == kExtDataFile) {
      h.has_data_file_extension = true;
    }
    pos += (uint64_t{len} + 7) & ~uint64_t{7};
  }
  return h;
}

void check_openable(const Header& h, const std::string& path) {
  if (h.crypt_method != 0)
    throw Error(EOPNOTSUPP,
                std::string("encrypted qcow2 image (") + (h.crypt_method == 1 ? "AES" : h.crypt_method == 2 ? "LUKS" : "method " + std::to_string(h.crypt_method)) +
                    ") is not supported", path);

  // External data files are refused on every path (DESIGN.md, hostile
  // input): the name is guest-controlled and qemu would open it itself.
  if ((h.incompatible_features & kIncompatDataFile) || h.has_data_file_extension)
    throw Error(EOPNOTSUPP, "qcow2 feature not supported: external data file", path);
  const uint64_t known = kIncompatDirty | kIncompatCorrupt | kIncompatDataFile | kIncompatCompressionType |
                         kIncompatExtendedL2;
  if (h.incompatible_features & ~known)
    throw Error(EOPNOTSUPP, "unknown qcow2 incompatible feature bits " + hex(h.incompatible_features & ~known) +
                                " not supported", path);
  // 0 zlib, 1 zstd: the two types qemu knows.
  if (h.compression_type > 1)
    throw Error(EOPNOTSUPP, "qcow2 compression type " + std::to_string(h.compression_type) + " not supported", path);
  if (h.compression_type != 0 && !(h.incompatible_features & kIncompatCompressionType))
    corrupt("compression type " + std::to_string(h.compression_type) + " without the compression type feature bit",
            path);
  if (h.incompatible_features & kIncompatCorrupt)
    throw Error(EIO, "qcow2 image is marked corrupt by qemu", path);

  if (h.virtual_size > kMaxVirtualSize)
    corrupt("virtual size " + std::to_string(h.virtual_size) + " is implausibly large", path);
  // One L2 table maps cluster_size / 8 clusters (cluster_size / 16 with
  // extended L2 entries, which are twice as wide).
  const uint32_t entry_bits = (h.incompatible_features & kIncompatExtendedL2) ? 4 : 3;
  const uint64_t bytes_per_l1_entry = h.cluster_size << (h.cluster_bits - entry_bits);
  const uint64_t l1_needed = h.virtual_size / bytes_per_l1_entry + (h.virtual_size % bytes_per_l1_entry != 0);
  const uint64_t l1_bytes = uint64_t{h.l1_size} * 8;
  if (l1_needed > h.l1_size)
    corrupt("L1 table of " + std::to_string(h.l1_size) + " entries is too small for the virtual size " +
                std::to_string(h.virtual_size), path);
  if (l1_bytes > kMaxL1Bytes) corrupt("L1 table of " + std::to_string(h.l1_size) + " entries is too large", path);
  if (h.l1_size != 0) {
    if (h.l1_table_offset == 0 || h.l1_table_offset % h.cluster_size != 0)
      corrupt("L1 table offset " + hex(h.l1_table_offset) + " is not cluster aligned", path);
    if (h.l1_table_offset > h.file_size || l1_bytes > h.file_size - h.l1_table_offset)
      corrupt("L1 table at " + hex(h.l1_table_offset) + " (" + std::to_string(l1_bytes) +
                  " bytes) lies past the end of the file (" + std::to_string(h.file_size) + " bytes)", path);
  }
}

std::vector<uint64_t> read_l1_table(const ImageFile& file, const Header& h) {
  std::vector<unsigned char> raw(uint64_t{h.l1_size} * 8);
  if (!raw.empty()) file.read_exact(raw.data(), raw.size(), h.l1_table_offset, "L1 table");
  std::vector<uint64_t> l1(h.l1_size);
  for (size_t i = 0; i < l1.size(); ++i) l1[i] = load_be64(raw.data() + i * 8);
  return l1;
}

}  // namespace sendense::qcow2
