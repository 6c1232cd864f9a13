// Extended attributes: short form (in the inode), leaf blocks and node
// (dabtree) blocks, values in the entry or in remote value blocks; names
// mapped to the Linux namespaces, ACLs to the VFS format.
#include <unordered_set>

#include "readers/common/error.h"
#include "readers/fs/xfs/xfs_volume.h"

namespace sendense::xfs {

namespace {

constexpr unsigned kMaxDaDepth = 5;           // XFS_DA_NODE_MAXDEPTH
constexpr size_t kMaxXattrs = 1u << 20;
constexpr uint32_t kMaxValueLength = 65536;   // XATTR_SIZE_MAX

void put_le(std::string& out, uint32_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i, v >>= 8) out.push_back(static_cast<char>(v & 0xff));
}

// Keeps `x`; an ACL is also shown under its system.posix_acl_* name (value
// converted when read), as the kernel lists both to root.
void add_xattr(std::vector<Xattr>& out, Xattr x) {
  std::optional<std::string> acl = acl_name_of(x.name);
  if (acl) {
    Xattr alias = x;
    alias.name = std::move(*acl);
    out.push_back(std::move(alias));
  }
  out.push_back(std::move(x));
}

}  // namespace

std::optional<std::string> linux_xattr_name(uint8_t flags, std::string_view stored) {
  if (flags & (kAttrParent | kAttrIncomplete)) return std::nullopt;
  if ((flags & kAttrRoot) && (flags & kAttrSecure)) return std::nullopt;
  if (flags & kAttrRoot) return "trusted." + std::string(stored);
  if (flags & kAttrSecure) return "security." + std::string(stored);
  return "user." + std::string(stored);
}

std::optional<std::string> acl_name_of(std::string_view linux_name) {
  if (linux_name == "trusted.SGI_ACL_FILE") return std::string("system.posix_acl_access");
  if (linux_name == "trusted.SGI_ACL_DEFAULT") return std::string("system.posix_acl_default");
  return std::nullopt;
}

std::optional<std::string> acl_xfs_to_vfs(std::string_view disk) {
  constexpr uint32_t kUndefinedId = 0xffffffffu;
  const auto* p = reinterpret_cast<const unsigned char*>(disk.data());
  if (disk.size() < 4) return std::nullopt;
  const uint64_t count = be32(p);
  if (count > 10000 || disk.size() != 4 + count * 12) return std::nullopt;
  std::string out;
  put_le(out, 2, 4);  // POSIX_ACL_XATTR_VERSION
  for (uint64_t i = 0; i < count; ++i) {
    const unsigned char* e = p + 4 + i * 12;
    const uint32_t tag = be32(e);
    uint32_t id = be32(e + 4);
    const uint32_t perm = be16(e + 8);
    switch (tag) {
      case 0x01: case 0x04: case 0x10: case 0x20:  // USER_OBJ, GROUP_OBJ, MASK, OTHER
        id = kUndefinedId;
        break;
      case 0x02: case 0x08:  // USER, GROUP
        break;
      default:
        return std::nullopt;
    }
    if (perm > 7) return std::nullopt;
    put_le(out, tag, 2);
    put_le(out, perm, 2);
    put_le(out, id, 4);
  }
  return out;
}

void XfsVolume::parse_attr_leaf(const Inode& inode, const std::string& block, std::vector<Xattr>& out) const {
  const auto* p = reinterpret_cast<const unsigned char*>(block.data());
  const size_t size = block.size();
  auto fail = [&](const std::string& why) -> void {
    throw Error(EIO, "damaged attribute leaf block: " + why, where(inode.ino));
  };
  const size_t count = be16(p + (sb_.v5 ? 56 : 12));
  const size_t entries = sb_.v5 ? 80 : 32;
  if (count > (size - entries) / 8) fail("entry count " + std::to_string(count));
  for (size_t i = 0; i < count; ++i) {
    const unsigned char* e = p + entries + i * 8;
    const size_t at = be16(e + 4);
    const uint8_t flags = e[6];
    if (at < entries || at >= size) fail("entry " + std::to_string(i) + " points outside the block");
    Xattr x;
    std::string_view stored;
    if (flags & kAttrLocal) {
      if (at + 3 > size) fail("entry " + std::to_string(i) + " past the block");
      const size_t value_length = be16(p + at);
      const size_t name_length = p[at + 2];
      if (at + 3 + name_length + value_length > size) fail("entry " + std::to_string(i) + " past the block");
      stored = std::string_view(reinterpret_cast<const char*>(p + at + 3), name_length);
      x.value.assign(reinterpret_cast<const char*>(p + at + 3 + name_length), value_length);
    } else {
      if (at + 9 > size) fail("entry " + std::to_string(i) + " past the block");
      x.remote = true;
      x.remote_block = be32(p + at);
      x.remote_length = be32(p + at + 4);
      const size_t name_length = p[at + 8];
      if (at + 9 + name_length > size) fail("entry " + std::to_string(i) + " past the block");
      if (x.remote_length > kMaxValueLength) fail("value of " + std::to_string(x.remote_length) + " bytes");
      stored = std::string_view(reinterpret_cast<const char*>(p + at + 9), name_length);
    }
    std::optional<std::string> name = linux_xattr_name(flags, stored);
    if (!name) continue;
    if (out.size() >= kMaxXattrs) fail("too many attributes");
    x.name = std::move(*name);
    add_xattr(out, std::move(x));
  }
}

void XfsVolume::collect_attr_leaves(const Inode& inode, const std::vector<Extent>& extents, uint64_t block_no,
                                    unsigned depth, std::vector<Xattr>& out,
                                    std::unordered_set<uint64_t>& visited) const {
  if (depth > kMaxDaDepth || !visited.insert(block_no).second)
    throw Error(EIO, "attribute tree loops or is too deep", where(inode.ino));
  std::optional<std::string> block = read_fork_blocks(extents, block_no, 1, inode.ino);
  if (!block) throw Error(EIO, "attribute block " + std::to_string(block_no) + " is not mapped", where(inode.ino));
  const auto* p = reinterpret_cast<const unsigned char*>(block->data());
  const uint16_t magic = be16(p + 8);
  const bool leaf = magic == (sb_.v5 ? kAttr3LeafMagic : kAttrLeafMagic);
  const bool node = magic == (sb_.v5 ? kDa3NodeMagic : kDaNodeMagic);
  if (!leaf && !node)
    throw Error(EIO, "attribute block " + std::to_string(block_no) + ": bad magic number", where(inode.ino));
  if (sb_.v5) check_v5_block_header(inode, p, block->size(), 12, 32, 48, "attribute block");
  if (leaf) {
    parse_attr_leaf(inode, *block, out);
    return;
  }
  const size_t count = be16(p + (sb_.v5 ? 56 : 12));
  const size_t entries = sb_.v5 ? 64 : 16;
  if (count == 0 || count > (block->size() - entries) / 8)
    throw Error(EIO, "attribute node block: entry count " + std::to_string(count), where(inode.ino));
  for (size_t i = 0; i < count; ++i)
    collect_attr_leaves(inode, extents, be32(p + entries + i * 8 + 4), depth + 1, out, visited);
}

std::vector<Xattr> XfsVolume::read_xattrs(const Inode& inode) const {
  std::vector<Xattr> out;
  if (inode.attr_fork.empty()) return out;
  if (inode.aformat == kFmtLocal) {
    const auto* p = reinterpret_cast<const unsigned char*>(inode.attr_fork.data());
    const size_t total = be16(p);
    const size_t count = p[2];
    if (total > inode.attr_fork.size() || total < 4)
      throw Error(EIO, "damaged short-form attributes: size " + std::to_string(total), where(inode.ino));
    size_t pos = 4;
    for (size_t i = 0; i < count; ++i) {
      if (pos + 3 > total) throw Error(EIO, "damaged short-form attributes: entry past the end", where(inode.ino));
      const size_t name_length = p[pos];
      const size_t value_length = p[pos + 1];
      const uint8_t flags = p[pos + 2];
      if (pos + 3 + name_length + value_length > total)
        throw Error(EIO, "damaged short-form attributes: entry past the end", where(inode.ino));
      std::optional<std::string> name =
          linux_xattr_name(flags & ~kAttrLocal, std::string_view(reinterpret_cast<const char*>(p + pos + 3), name_length));
      if (name) {
        Xattr x;
        x.name = std::move(*name);
        x.value.assign(reinterpret_cast<const char*>(p + pos + 3 + name_length), value_length);
        add_xattr(out, std::move(x));
      }
      pos += 3 + name_length + value_length;
    }
    return out;
  }
  const std::vector<Extent> extents = attr_extents(inode);
  if (extents.empty()) return out;
  std::unordered_set<uint64_t> visited;  // a block met twice means a loop or a shared subtree
  collect_attr_leaves(inode, extents, 0, 0, out, visited);
  return out;
}

std::string XfsVolume::xattr_value(const Inode& inode, const Xattr& xattr) const {
  if (!xattr.remote) return xattr.value;
  const uint32_t length = xattr.remote_length;
  if (length == 0) return {};
  const size_t header = sb_.v5 ? 56 : 0;
  const uint64_t payload = sb_.block_size - header;
  const uint64_t blocks = (length + payload - 1) / payload;
  const std::vector<Extent> extents = attr_extents(inode);
  std::optional<std::string> raw = read_fork_blocks(extents, xattr.remote_block, blocks, inode.ino);
  if (!raw) throw Error(EIO, "value of " + xattr.name + " is not mapped", where(inode.ino));
  if (!sb_.v5) return raw->substr(0, length);
  std::string value;
  value.reserve(length);
  for (uint64_t b = 0; b < blocks; ++b) {
    const auto* p = reinterpret_cast<const unsigned char*>(raw->data()) + b * sb_.block_size;
    if (be32(p) != kAttr3RemoteMagic) throw Error(EIO, "value block of " + xattr.name + ": bad magic", where(inode.ino));
    check_v5_block_header(inode, p, sb_.block_size, 12, 16, 32, "attribute value block");
    const uint32_t at = be32(p + 4);
    const uint32_t bytes = be32(p + 8);
    if (at != value.size() || bytes > payload || at + bytes > length)
      throw Error(EIO, "value block of " + xattr.name + ": bad offset or length", where(inode.ino));
    value.append(reinterpret_cast<const char*>(p + header), bytes);
  }
  if (value.size() != length) throw Error(EIO, "value of " + xattr.name + " is short", where(inode.ino));
  return value;
}

}  // namespace sendense::xfs
