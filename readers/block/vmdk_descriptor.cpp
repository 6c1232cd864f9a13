// The VMDK descriptor, as far as qemu's vmdk driver acts on it: a text
// descriptor (a file of its own, or embedded in a sparse extent at the
// sector its header names) lists extents as
//   RW 4192256 SPARSE "name-s001.vmdk"
// and may name a parent disk (parentFileNameHint="...").
// qemu opens the extents of a text descriptor relative to its folder; a
// sparse ("KDMV") file is its own single extent unless its header's capacity
// is 0, in which case the embedded descriptor's extents are opened too.
#include "readers/block/vmdk_descriptor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "readers/common/error.h"

namespace sendense::vmdk {

namespace {

// Up to `len` bytes at `offset` (fewer at the end of the file).
std::string read_range(const ImageFile& file, uint64_t offset, size_t len, const char* what) {
  std::string buf(len, '\0');
  buf.resize(file.read_some(buf.data(), len, offset, what));
  return buf;
}

uint64_t load_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool inside(const std::string& path, const std::string& root) {
  if (root.empty() || root == "/") return true;
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/');
}

// The value of `key="..."` in the descriptor ("" if absent).
std::string quoted_value(const std::string& text, const std::string& key) {
  size_t pos = 0;
  while ((pos = text.find(key, pos)) != std::string::npos) {
    size_t p = pos + key.size();
    while (p < text.size() && (text[p] == ' ' || text[p] == '\t')) ++p;
    if (p < text.size() && text[p] == '=') {
      ++p;
      while (p < text.size() && (text[p] == ' ' || text[p] == '\t')) ++p;
      if (p < text.size() && text[p] == '"') {
        const auto end = text.find('"', p + 1);
        return text.substr(p + 1, end == std::string::npos ? std::string::npos : end - p - 1);
      }
    }
    pos += key.size();
  }
  return {};
}

// Validates one extent name and returns its canonical path.
std::string check_extent(const std::string& name, const std::string& dir, const std::string& root,
                         const std::string& display) {
  auto refuse = [&](const std::string& why) -> Error {
    return Error(EOPNOTSUPP, "VMDK extent file name '" + name + "' " + why, display);
  };
  if (name.empty()) throw refuse("is empty");
  if (name.find('\0') != std::string::npos) throw refuse("holds a NUL byte");
  if (name.front() == '/') throw refuse("is an absolute path (only names relative to the descriptor are allowed)");
  if (name.find(':') != std::string::npos) throw refuse("holds ':' (a protocol or json: name)");
  size_t start = 0;
  while (start <= name.size()) {
    const size_t slash = name.find('/', start);
    const std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") throw refuse("holds a '..' component");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  const std::string joined = dir + "/" + name;
  char* resolved = ::realpath(joined.c_str(), nullptr);
  if (resolved == nullptr) {
    const int saved = errno;
    throw Error(saved, "VMDK extent file '" + joined + "': " + std::strerror(saved), display);
  }
  std::string canonical(resolved);
  std::free(resolved);
  if (!inside(canonical, root))
    throw Error(EACCES, "VMDK extent file '" + canonical + "' (named '" + name +
                            "') is outside the repository folder '" + root + "'", display);
  struct stat st {};
  if (::stat(canonical.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    throw Error(EIO, "VMDK extent file '" + canonical + "' is not a regular file", display);
  return canonical;
}

// C-locale isspace, as sscanf skips it.
bool scan_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// For each position, the first position at or after it that is not
// whitespace: skipping a run of blank lines from any of its lines is O(1).
std::vector<uint32_t> word_starts(const std::string& text) {
  std::vector<uint32_t> next(text.size() + 1);
  next[text.size()] = static_cast<uint32_t>(text.size());
  for (size_t i = text.size(); i-- > 0;) next[i] = scan_space(text[i]) ? next[i + 1] : static_cast<uint32_t>(i);
  return next;
}

struct ExtentFields {
  int matches = 0;  // conversions that succeeded, as sscanf counts them
  std::string access;
  std::string type;
  std::string name;
};

// What qemu's vmdk_parse_extents reads at line start `p`:
//   sscanf(p, "%10s %" SCNd64 " %10s \"%511[^\n\r\"]\" %" SCNd64, ...)
// over the whole rest of the descriptor, so one extent may span lines
// ("RW\n8\nFLAT\n\"name\" 0") and any whitespace separates its fields. The
// same rules, without sscanf's strlen of the rest at every line (quadratic
// on a hostile 1 MiB descriptor). The name is exactly the (at most 511)
// bytes qemu would open.
ExtentFields scan_extent_line(const std::string& t, size_t p, const std::vector<uint32_t>& next_word) {
  ExtentFields f;
  const size_t n = t.size();
  auto word = [&](size_t& at, std::string& out) {  // %10s
    at = next_word[at];
    const size_t from = at;
    while (at < n && at - from < 10 && !scan_space(t[at])) ++at;
    out = t.substr(from, at - from);
    return at > from;
  };
  if (!word(p, f.access)) return f;
  f.matches = 1;
  p = next_word[p];  // %SCNd64: optional sign, then at least one digit
  if (p < n && (t[p] == '+' || t[p] == '-')) ++p;
  const size_t digits = p;
  while (p < n && t[p] >= '0' && t[p] <= '9') ++p;
  if (p == digits) return f;
  f.matches = 2;
  if (!word(p, f.type)) return f;
  f.matches = 3;
  p = next_word[p];
  if (p >= n || t[p] != '"') return f;
  const size_t from = ++p;
  while (p < n && p - from < 511 && t[p] != '\n' && t[p] != '\r' && t[p] != '"') ++p;
  if (p == from) return f;
  f.name = t.substr(from, p - from);
  f.matches = 4;
  return f;
}

// Refuses a sparse extent whose header says capacity 0: qemu would read the
// descriptor embedded in it and open the extents that one names.
void refuse_nested_descriptor(const std::string& extent, const std::string& name, const std::string& display) {
  ImageFilePtr file;
  try {
    file = ImageFile::open(extent, display);  // never blocks on a FIFO named as an extent
  } catch (const Error& e) {
    throw Error(e.code(), "VMDK extent '" + name + "': " + e.message(), display);
  }
  const std::string head = read_range(*file, 0, 64, "VMDK extent header");
  if (head.size() < 20 || head.compare(0, 4, "KDMV") != 0) return;
  if (load_le64(reinterpret_cast<const unsigned char*>(head.data()) + 12) == 0)
    throw Error(EOPNOTSUPP, "VMDK sparse extent '" + name + "' has capacity 0: a descriptor of its own, naming further "
                            "extents, is not supported", display);
}

}  // namespace

std::vector<std::string> check_vmdk(const ImageFile& file, const std::string& path, const std::string& confine_root) {
  const std::string& display = file.display();
  const uint64_t file_size = file.size();

  const std::string head = read_range(file, 0, 512, "VMDK header");
  std::string descriptor;
  bool extents_used = true;  // does qemu open the descriptor's extents?
  if (head.size() >= 4 && head.compare(0, 4, "COWD") == 0)
    throw Error(EOPNOTSUPP, "VMDK3 (COWD) images are not supported", display);
  if (head.size() >= 4 && head.compare(0, 4, "KDMV") == 0) {
    if (head.size() < 64) throw Error(EIO, "damaged VMDK image: sparse header shorter than 64 bytes", display);
    const auto* h = reinterpret_cast<const unsigned char*>(head.data());
    const uint64_t capacity = load_le64(h + 12);
    const uint64_t desc_sector = load_le64(h + 28);
    const uint64_t desc_sectors = load_le64(h + 36);
    extents_used = capacity == 0;
    if (desc_sector != 0 && desc_sectors != 0) {
      if (desc_sectors > kMaxDescriptorBytes / 512 + 1 || desc_sector > file_size / 512 ||
          desc_sectors * 512 > file_size - desc_sector * 512)
        throw Error(EIO, "damaged VMDK image: embedded descriptor at sector " + std::to_string(desc_sector) + " (+" +
                             std::to_string(desc_sectors) + " sectors) lies outside the file", display);
      // qemu ignores the descriptor size and reads up to 1 MiB from its
      // start (as a C string): check the same bytes, not only the declared
      // sectors, or text after them would reach qemu unchecked.
      descriptor = read_range(file, desc_sector * 512, kMaxDescriptorBytes, "VMDK embedded descriptor");
      descriptor.resize(std::strlen(descriptor.c_str()));  // NUL-padded
    } else if (extents_used) {
      throw Error(EIO, "damaged VMDK image: capacity 0 and no embedded descriptor", display);
    }
  } else {
    if (file_size > kMaxDescriptorBytes)
      throw Error(EIO, "not a VMDK image: no sparse header and too large (" + std::to_string(file_size) +
                           " bytes) for a text descriptor", display);
    descriptor = read_range(file, 0, static_cast<size_t>(file_size), "VMDK descriptor");
    descriptor.resize(std::strlen(descriptor.c_str()));  // qemu reads it as a C string (tools pad with NULs)
    if (quoted_value(descriptor, "createType").empty())
      throw Error(EIO, "not a VMDK image: no sparse header and no createType in the descriptor", display);
  }

  if (!quoted_value(descriptor, "parentFileNameHint").empty())
    throw Error(EOPNOTSUPP, "VMDK delta disks (parentFileNameHint '" + quoted_value(descriptor, "parentFileNameHint") +
                                "') are not supported", display);

  std::vector<std::string> extents;
  if (!extents_used) return extents;
  const std::vector<uint32_t> next_word = word_starts(descriptor);
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  size_t extent_lines = 0;
  for (size_t p = 0; p < descriptor.size();) {
    const ExtentFields f = scan_extent_line(descriptor, p, next_word);
    const auto nl = descriptor.find('\n', p);
    p = nl == std::string::npos ? descriptor.size() : nl + 1;
    if (f.matches < 2 || (f.access != "RW" && f.access != "RDONLY" && f.access != "NOACCESS")) continue;
    if (++extent_lines > kMaxExtents)
      throw Error(EIO, "VMDK descriptor lists more than " + std::to_string(kMaxExtents) + " extents", display);
    if (f.type == "VMFSRDM" || f.type == "VMFSRAW")
      throw Error(EOPNOTSUPP, "VMDK raw device mapping extents are not supported", display);
    if (f.matches < 4) continue;  // no quoted name: a ZERO extent, or a line qemu skips too
    const std::string extent = check_extent(f.name, dir, confine_root, display);
    // qemu opens a SPARSE extent as a sparse VMDK: one whose capacity is 0
    // makes qemu read the descriptor embedded in it and open the extents it
    // names as well, which this check would never see.
    if (f.type == "SPARSE" || f.type == "VMFSSPARSE") refuse_nested_descriptor(extent, f.name, display);
    extents.push_back(extent);
  }
  return extents;
}

namespace {

uint32_t load_le32(const unsigned char* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// True when the VHDX's file parameters say it has a parent (a differencing
// disk). Reads the region table (either copy), the metadata table and the
// file parameters item, each checked against the file size; anything not
// found reads as "no" and is left to qemu's own checks.
bool vhdx_has_parent(const ImageFile& file) {
  const uint64_t file_size = file.size();
  static const unsigned char kMetadataRegion[16] = {0x06, 0xA2, 0x7C, 0x8B, 0x90, 0x47, 0x9A, 0x4B,
                                                    0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E};
  static const unsigned char kFileParameters[16] = {0x37, 0x67, 0xA1, 0xCA, 0x36, 0xFA, 0x43, 0x4D,
                                                    0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B};
  constexpr uint32_t kHasParent = 1u << 1;
  for (uint64_t table : {uint64_t{192} << 10, uint64_t{256} << 10}) {
    const std::string rt = read_range(file, table, 64 * 1024, "VHDX region table");
    if (rt.size() < 16 || rt.compare(0, 4, "regi") != 0) continue;
    const auto* r = reinterpret_cast<const unsigned char*>(rt.data());
    const uint32_t entries = std::min<uint32_t>(load_le32(r + 8), (static_cast<uint32_t>(rt.size()) - 16) / 32);
    for (uint32_t i = 0; i < entries; ++i) {
      const unsigned char* e = r + 16 + 32 * i;
      if (std::memcmp(e, kMetadataRegion, 16) != 0) continue;
      const uint64_t region = load_le64(e + 16);
      const uint64_t region_len = load_le32(e + 24);
      if (region >= file_size || region_len < 64 * 1024 || region_len > file_size - region) return false;
      const std::string mt = read_range(file, region, 64 * 1024, "VHDX metadata table");
      if (mt.size() < 32 || mt.compare(0, 8, "metadata") != 0) return false;
      const auto* m = reinterpret_cast<const unsigned char*>(mt.data());
      const uint32_t items = std::min<uint32_t>(uint32_t{m[10]} | (uint32_t{m[11]} << 8),
                                                (static_cast<uint32_t>(mt.size()) - 32) / 32);
      for (uint32_t k = 0; k < items; ++k) {
        const unsigned char* item = m + 32 + 32 * k;
        if (std::memcmp(item, kFileParameters, 16) != 0) continue;
        const uint64_t off = load_le32(item + 16);
        if (load_le32(item + 20) < 8 || off + 8 > region_len) return false;
        const std::string params = read_range(file, region + off, 8, "VHDX file parameters");
        return params.size() == 8 && (load_le32(reinterpret_cast<const unsigned char*>(params.data()) + 4) & kHasParent);
      }
      return false;
    }
  }
  return false;
}

}  // namespace

void check_vhdx(const ImageFile& file) {
  const std::string& display = file.display();
  if (read_range(file, 0, 8, "VHDX header") != "vhdxfile")
    throw Error(EIO, "not a VHDX image (no \"vhdxfile\" signature)", display);
  if (vhdx_has_parent(file))
    throw Error(EOPNOTSUPP, "VHDX differencing disks (with a parent) are not supported", display);
}

}  // namespace sendense::vmdk
