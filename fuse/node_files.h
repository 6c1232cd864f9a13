// Files read without an open. The daemon answers the kernel's first OPEN
// with ENOSYS (FUSE_CAP_NO_OPEN_SUPPORT): from then on the kernel sends no
// OPEN and no RELEASE on that mount, and reads come with no handle, only the
// node id. That halves the requests of a small-file walk (open, read,
// release per file become one read). Reads then find their reader handle
// here, by node: a bounded LRU of OpenFiles (restore_tree.h), each closed
// when the table lets go of it and the last read through it ends.
//
// Without opens the daemon cannot tell one open file description from the
// next, so the rule "an open file never reads bytes of two versions of an
// image" is kept per kernel inode instead: a node once read through an
// attach whose image has since changed in the repository answers EIO until
// the kernel forgets the node (FORGET: it evicted the inode with its cached
// pages, which needs no process holding it and the kernel dropping it from
// its caches; a file server holding the file keeps it EIO). The next lookup
// then reads the new version afresh.
// What was read through which attach is remembered per node until then (a
// node id and a shared mark, about 50 bytes per node the kernel holds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>

#include "fuse/restore_tree.h"
#include "readers/common/shared_lru.h"

namespace sendense {

class NodeFiles {
 public:
  // Reader handles kept open at once; a file dropped from the table is
  // opened again by its next read (its extents mapped again).
  static constexpr size_t kMaxOpen = 1024;

  explicit NodeFiles(RestoreTree& tree) : tree_(tree) {}
  NodeFiles(const NodeFiles&) = delete;
  NodeFiles& operator=(const NodeFiles&) = delete;

  // Reads `node` at `offset` through its reader handle (opening one when
  // the table has none). Throws Error like RestoreTree::read, and EIO when
  // the node was read through an attach whose image changed since.
  size_t read(uint64_t node, uint64_t offset, std::span<std::byte> buf);

  // Where those bytes lie in the image files, when the reader can say
  // (RestoreTree::map_read), checked as read() checks its own.
  std::optional<RestoreTree::MappedRead> map_read(uint64_t node, uint64_t offset, size_t size);

  // The kernel dropped its inode of `node` (FORGET).
  void forget(uint64_t node);

  using Mark = std::shared_ptr<const AttachedBackup::ChangeMark>;
  // Bytes of `node` read through the attach of `mark` are about to reach
  // the kernel by another way (prefetch.h): false when read() would refuse
  // them, else remembered as read() remembers its own.
  bool read_through(uint64_t node, Mark mark);

 private:
  // Closes its file when the last holder lets go (a read may still be
  // using a file the table already dropped).
  struct Held {
    Held(RestoreTree& t, uint64_t node) : tree(t), file(std::make_shared<OpenFile>(node)) {}
    ~Held();
    RestoreTree& tree;
    std::shared_ptr<OpenFile> file;
  };

  // Throws EIO when `node` was read through an attach whose image changed.
  void check_fresh(uint64_t node);
  std::shared_ptr<const Held> held(uint64_t node);

  RestoreTree& tree_;
  ext::SharedLru<Held> open_{kMaxOpen, kMaxOpen};
  std::mutex mutex_;
  std::unordered_map<uint64_t, Mark> read_through_;  // node -> the attach it was last read through
};

}  // namespace sendense
