// Filesystem: a read-only filesystem tree keyed by the filesystem's own inode
// numbers. Message-shaped on purpose (plain values in and out, no pointers or
// callbacks across it) so a reader can later move behind a process boundary.
//
// Threading: every method may be called from many threads at once; an
// implementation serialises access to its library where it must.
// Errors: lookup misses and absent xattrs are normal outcomes (std::nullopt);
// everything else throws sendense::Error (ENOENT for a bad inode, EIO for
// damaged metadata, ENOTDIR/EISDIR/EINVAL for misuse).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/common/cache_budget.h"

namespace sendense {

struct Attr {
  uint64_t ino = 0;        // the filesystem's inode number
  uint32_t mode = 0;       // type and permission bits as stored (S_IFREG|0644, ...)
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;     // 512-byte units actually allocated
  uint64_t rdev = 0;       // device number for block/char devices
  uint64_t generation = 0; // for NFS file handles
  timespec atime{};
  timespec mtime{};
  timespec ctime{};
};

struct DirEntry {
  std::string name;        // as stored; "." and ".." included
  uint64_t ino = 0;
  uint32_t type = 0;       // S_IFMT bits of the entry (S_IFDIR, ...), 0 if unknown
  uint64_t next = 0;       // readdir_page: the cookie a listing resumes at after this entry
};

// What a reader did about the volume's journal or log at open, for logs,
// `inspect` and `status`. Readers never write; a replay happens in memory.
struct JournalReport {
  // "none" (no journal/log), "clean", "replayed" (in memory), "skipped"
  // (needs recovery but not replayed: --no-replay, or the reader cannot),
  // "unsupported" (e.g. an external journal device), "unknown" (the log
  // could not be read to tell; shown as stored).
  std::string state = "none";
  uint64_t transactions = 0;  // transactions applied (state "replayed")
  uint64_t blocks = 0;        // blocks those transactions mapped
  std::string note;           // one line for humans ("view as of the last checkpoint", ...)
};

// The most one folder's listing may weigh, in bytes (listing_cap.h): about
// 3 million entries of 20-byte names; a million such names weigh about 90 MiB.
inline constexpr size_t kMaxListingBytes = 256u << 20;

// How readers open a volume (the same for every reader).
struct FsOpenOptions {
  // Replay a journal/log that needs recovery into memory (never onto the
  // image). false shows the on-disk state as stored (forensics).
  bool replay_journal = true;
  // Owner and permission bits shown for filesystems that store no POSIX
  // ones (NTFS): every file and folder gets these. Symlinks are 0777.
  uint32_t ntfs_uid = 0;
  uint32_t ntfs_gid = 0;
  uint32_t ntfs_dir_mode = 0755;
  uint32_t ntfs_file_mode = 0644;
  // Bytes all caches of one backup may keep together (--cache-budget):
  // the limit whoever opens a backup gives the CacheBudget it makes.
  uint64_t cache_budget_bytes = kDefaultCacheBudgetBytes;
  // The cap on one folder's listing: a reader building a heavier one stops
  // there with EIO (tests set it low to cross it with small images).
  size_t max_listing_bytes = kMaxListingBytes;
  // That backup's budget, shared by its images' and volumes' readers; null
  // (tools reading one volume, tests): each cache keeps only its own cap.
  CacheBudgetPtr cache_budget;
};

struct FsStat {
  uint64_t block_size = 0;
  uint64_t blocks = 0;
  uint64_t blocks_free = 0;
  uint64_t files = 0;
  uint64_t files_free = 0;
  uint64_t name_max = 255;
};

class Filesystem {
 public:
  virtual ~Filesystem() = default;

  virtual uint64_t root_ino() const = 0;
  virtual std::string type_name() const = 0;  // "ext4", ...

  virtual Attr getattr(uint64_t ino) = 0;
  // The entry `name` of directory `dir` with its attributes, or nullopt.
  virtual std::optional<Attr> lookup(uint64_t dir, std::string_view name) = 0;
  // The whole directory, in on-disk order (stable: backups never change).
  virtual std::vector<DirEntry> readdir(uint64_t dir) = 0;
  // At most `max` entries of the listing from `cookie` (0: its start; else
  // the `next` of an entry an earlier page returned), in readdir()'s order;
  // fewer than `max` only at the end, empty past it. Cookies grow along a listing and stay valid for
  // the filesystem's life, and across re-opens of the same image. The
  // default lists the whole directory for each page: fine for a reader
  // whose readdir is cheap; the engine puts a cache in front of every
  // reader (readers/fs/paged_listing.h), so a folder of millions of
  // entries crosses the worker boundary and reaches FUSE a page at a time.
  // `attrs_next`: the caller will ask every entry's attributes next
  // (readdirplus); a reader behind a process boundary brings them along.
  virtual std::vector<DirEntry> readdir_page(uint64_t dir, uint64_t cookie, size_t max, bool attrs_next);
  // The symlink's target exactly as stored; never followed.
  virtual std::string readlink(uint64_t ino) = 0;

  // Prepares `ino` for reading (maps its extents once) and returns a handle
  // for read(); release() frees it. Throws EISDIR for a directory.
  virtual uint64_t open(uint64_t ino) = 0;
  // Reads up to buf.size() bytes at `offset`; returns the count (short only
  // at end of file). Holes and unwritten extents read as zeros.
  virtual size_t read(uint64_t handle, uint64_t offset, std::span<std::byte> buf) = 0;
  virtual void release(uint64_t handle) = 0;
  // Where the bytes read() would return for (`handle`, `offset`, `size`)
  // are stored, as map_file's extents (clipped at the end of the file:
  // empty past it), or nullopt where the reader cannot say cheaply. So
  // that the daemon can reply with the image files' own bytes (spliced
  // into /dev/fuse, fuse/fuse_ops.cpp) instead of copying them through a
  // buffer. Throws as read() does. nullopt past kMaxReadExtents pieces.
  static constexpr size_t kMaxReadExtents = 32;
  virtual std::optional<std::vector<Extent>> map_read(uint64_t handle, uint64_t offset, size_t size) {
    (void)handle, (void)offset, (void)size;
    return std::nullopt;
  }

  // Whole small files at once, for reading ahead (fuse/prefetch.h): for each
  // (inode, size) its bytes [0, size), or nothing where it cannot be read
  // whole at that size. Never throws for one file. The default opens and
  // reads each; a reader behind a process boundary asks for all in one request.
  struct WholeFile {
    uint64_t ino = 0;
    uint64_t size = 0;
  };
  virtual std::vector<std::vector<std::byte>> read_files(std::span<const WholeFile> files);

  // Where regular file `ino`'s bytes [0, size) are stored (block_device.h:
  // extents of the image files, zeros for holes), in file order; nullopt
  // where the reader cannot say (inline or compressed data, a format
  // without maps) or when it takes more than `max_extents`. So that the
  // daemon can copy a sandboxed worker's file itself (worker/protocol.h).
  virtual std::optional<std::vector<Extent>> map_file(uint64_t ino, size_t max_extents) {
    (void)ino, (void)max_extents;
    return std::nullopt;
  }

  // Full names ("user.x", "security.selinux", "system.posix_acl_access").
  // A name in the user., security. or trusted. namespace, or a POSIX ACL
  // name, is found by getxattr only if listxattr lists it (a sandboxed
  // worker's daemon answers the others' absence from the list:
  // fuse/worker_client.cpp); other names (system.ntfs_*) may be found unlisted.
  virtual std::vector<std::string> listxattr(uint64_t ino) = 0;
  virtual std::optional<std::string> getxattr(uint64_t ino, std::string_view name) = 0;

  virtual FsStat statfs() = 0;

  // Fixed at open; the default suits a filesystem without a journal.
  virtual JournalReport journal() const { return {}; }
};

// The names listxattr shows when present (Filesystem::listxattr):
// user., security., trusted. and the two POSIX ACL names.
inline bool listed_xattr_name(std::string_view n) {
  return n.starts_with("user.") || n.starts_with("security.") || n.starts_with("trusted.") ||
         n == "system.posix_acl_access" || n == "system.posix_acl_default";
}

using FilesystemPtr = std::shared_ptr<Filesystem>;

}  // namespace sendense
