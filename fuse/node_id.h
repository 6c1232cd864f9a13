// Node ids (and the st_ino the tree reports) are computed, never stored:
//
//   1                        the root (FUSE_ROOT_ID); in a tenant's view, its root
//   2                        by-vm/
//   3                        tenants/ (the operator's tree only)
//   bit 63 set               a synthetic node: bits 56-62 its kind, bits 0-55 its key
//                              kind 1 <backup-id>/            key = backup_jobs.num
//                              kind 2 by-vm/<vm>/             key = 56-bit hash of the vm name
//                              kind 3 by-vm/<vm>/<timestamp>  key = backup_jobs.num
//                              kind 4 by-vm/<vm>/latest       key = backup_jobs.num of its target
//                                (a newer backup gives latest a new node id, so the kernel
//                                never serves a cached target of the old one)
//                              kind 5 tenants/<name>/         key = tenants.num (the mount
//                                point of that tenant's view, empty in the operator's tree)
//   otherwise                (volume id << 40) | filesystem inode
//                              volume id from the catalog's volumes table (1 .. 2^23-1,
//                              never reused), inode < 2^40 (ext inodes are 32-bit).
//
// So the same path has the same node id after an idle detach, a re-attach or
// a daemon restart, and any node id the kernel (or an NFS client) still holds
// decodes to its backup without a table: re-attach is lazy, no ESTALE.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sendense::node {

inline constexpr uint64_t kRoot = 1;
inline constexpr uint64_t kByVm = 2;
inline constexpr uint64_t kTenants = 3;

enum class Kind : uint8_t { backup_dir = 1, vm_dir = 2, dated_link = 3, latest_link = 4, tenant_dir = 5 };

inline constexpr uint64_t kSyntheticBit = 1ULL << 63;
inline constexpr uint64_t kKeyMask = (1ULL << 56) - 1;
inline constexpr int kInodeBits = 40;
inline constexpr uint64_t kInodeMask = (1ULL << kInodeBits) - 1;
inline constexpr int64_t kMaxVolumeId = (1LL << 23) - 1;

inline constexpr uint64_t synthetic(Kind kind, uint64_t key) {
  return kSyntheticBit | (static_cast<uint64_t>(kind) << 56) | (key & kKeyMask);
}
inline constexpr bool is_synthetic(uint64_t id) { return (id & kSyntheticBit) != 0; }
inline constexpr Kind kind_of(uint64_t id) { return static_cast<Kind>((id >> 56) & 0x7f); }
inline constexpr uint64_t key_of(uint64_t id) { return id & kKeyMask; }

// Volume nodes. std::nullopt when the inode does not fit (never for ext).
inline std::optional<uint64_t> volume_node(int64_t volume_id, uint64_t fs_ino) {
  if (volume_id <= 0 || volume_id > kMaxVolumeId || fs_ino > kInodeMask) return std::nullopt;
  return (static_cast<uint64_t>(volume_id) << kInodeBits) | fs_ino;
}
inline constexpr bool is_volume_node(uint64_t id) { return !is_synthetic(id) && (id >> kInodeBits) != 0; }
inline constexpr int64_t volume_of(uint64_t id) { return static_cast<int64_t>(id >> kInodeBits); }
inline constexpr uint64_t inode_of(uint64_t id) { return id & kInodeMask; }

// FNV-1a, 56 bits: the key of a vm's folder in by-vm/.
inline constexpr uint64_t vm_key(std::string_view vm) {
  uint64_t h = 14695981039346656037ULL;  // the FNV-1a 64-bit offset basis
  for (char c : vm) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h & kKeyMask;
}

}  // namespace sendense::node
