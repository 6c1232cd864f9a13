// The metadata side of the XFS reader: inodes, fork extent maps (including
// bmbt btrees), directories, symlinks and extended attributes, decoded from
// the BlockDevice with every field checked. Stateless after construction,
// so every method is safe to call from many threads at once (the device is
// thread-safe). Private to readers/fs/xfs/; xfs_filesystem.cpp adds the
// caches and the Filesystem interface on top.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "readers/fs/filesystem.h"
#include "readers/fs/listing_cap.h"
#include "readers/fs/xfs/xfs_format.h"

namespace sendense::xfs {

// Inode numbers the daemon can address (it keeps 40 bits for them).
inline constexpr uint64_t kMaxInodeNumber = (uint64_t{1} << 40) - 1;

struct Inode {
  uint64_t ino = 0;
  uint16_t mode = 0;
  uint8_t version = 0;
  uint8_t format = 0;
  uint8_t aformat = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  timespec atime{};
  timespec mtime{};
  timespec ctime{};
  uint64_t size = 0;
  uint64_t nblocks = 0;
  uint64_t nextents = 0;
  uint64_t anextents = 0;
  uint16_t flags = 0;
  uint32_t generation = 0;
  uint32_t rdev = 0;          // raw XFS device number (format kFmtDev)
  std::string data_fork;      // the literal area of the data fork
  std::string attr_fork;      // the literal area of the attribute fork ("" if none)
};

// One mapping of a fork: file blocks [offset, offset + count) at filesystem
// block `block` (a linear block number: AG * agblocks + AG block, checked to
// lie inside the filesystem).
struct Extent {
  uint64_t offset = 0;
  uint64_t block = 0;
  uint64_t count = 0;
  bool unwritten = false;
};

struct Xattr {
  std::string name;   // full Linux name ("user.x", "system.posix_acl_access")
  std::string value;  // local values; remote ones are read by xattr_value()
  bool remote = false;
  uint32_t remote_block = 0;
  uint32_t remote_length = 0;
};

class XfsVolume {
 public:
  XfsVolume(BlockDevicePtr device, std::string name);

  const Superblock& sb() const { return sb_; }
  const BlockDevice& device() const { return *device_; }
  const std::string& name() const { return name_; }
  std::string where(uint64_t ino) const { return name_ + " inode " + std::to_string(ino); }

  // Throws ENOENT for an inode number that cannot exist or an unused inode,
  // EIO for a damaged one (bad magic, CRC, owner, forks).
  Inode read_inode(uint64_t ino) const;

  // Byte offset of a linear filesystem block on the device.
  uint64_t block_offset(uint64_t block) const { return block * sb_.block_size; }

  // The fork's mappings sorted by offset, checked (no overlap, inside the
  // filesystem); at most `max_extents`.
  std::vector<Extent> data_extents(const Inode& inode) const;
  std::vector<Extent> attr_extents(const Inode& inode) const;

  // Past `max_listing_bytes` of entries (listing_cap.h): EIO.
  std::vector<DirEntry> read_directory(const Inode& dir, size_t max_listing_bytes = kMaxListingBytes) const;
  std::string read_symlink(const Inode& inode) const;
  std::vector<Xattr> read_xattrs(const Inode& inode) const;
  std::string xattr_value(const Inode& inode, const Xattr& xattr) const;

 private:
  std::vector<Extent> fork_extents(const Inode& inode, bool attr) const;
  void walk_bmbt_block(const Inode& inode, uint64_t fsblock, unsigned level, std::vector<Extent>& out,
                       bool attr) const;
  void add_extent_records(const Inode& inode, const unsigned char* recs, size_t count, std::vector<Extent>& out,
                          bool attr) const;
  // Converts an encoded filesystem block (AG << agblklog | AG block) to a
  // linear block, checking [block, block + count) lies in one AG.
  uint64_t linear_block(uint64_t fsblock, uint64_t count, uint64_t ino) const;
  // Reads file blocks [offset, offset + count) of a fork whose extents are
  // given; nullopt if none is mapped (a hole), EIO if only part is.
  std::optional<std::string> read_fork_blocks(const std::vector<Extent>& extents, uint64_t offset, uint64_t count,
                                              uint64_t ino) const;
  void parse_dir_data_block(const Inode& dir, const std::string& block, uint64_t dir_block,
                            std::vector<DirEntry>& out, ListingCap& cap) const;
  void parse_shortform_dir(const Inode& dir, std::vector<DirEntry>& out) const;
  void collect_attr_leaves(const Inode& inode, const std::vector<Extent>& extents, uint64_t block, unsigned depth,
                           std::vector<Xattr>& out, std::unordered_set<uint64_t>& visited) const;
  void parse_attr_leaf(const Inode& inode, const std::string& block, std::vector<Xattr>& out) const;
  void check_v5_block_header(const Inode& inode, const unsigned char* block, size_t length, size_t crc_offset,
                             size_t uuid_offset, size_t owner_offset, const char* what) const;

  BlockDevicePtr device_;
  std::string name_;
  Superblock sb_;
};

// Adds the namespace prefix of an XFS attribute (flags) to its stored name.
// nullopt for attributes Linux does not show (parent pointers, incomplete ones).
std::optional<std::string> linux_xattr_name(uint8_t flags, std::string_view stored);

// XFS keeps POSIX ACLs as trusted.SGI_ACL_FILE / trusted.SGI_ACL_DEFAULT in
// its own format; Linux shows them as system.posix_acl_access/default too
// (and lists the trusted.* names to root). The system.* name for an ACL
// attribute, or nullopt.
std::optional<std::string> acl_name_of(std::string_view linux_name);

// The XFS on-disk ACL (big-endian count + 12-byte entries) as the VFS
// xattr format getxattr(2) returns; nullopt if malformed.
std::optional<std::string> acl_xfs_to_vfs(std::string_view disk);

}  // namespace sendense::xfs
