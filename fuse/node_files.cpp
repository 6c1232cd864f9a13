#include "fuse/node_files.h"

#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

NodeFiles::Held::~Held() {
  try {
    tree.close(*file, /*activity=*/false);
  } catch (const std::exception& e) {
    log::debug("node_file_close", {{"error", e.what()}});
  }
}

namespace {

// Read before through an attach whose image has changed since.
bool stale(const std::shared_ptr<const AttachedBackup::ChangeMark>& before) {
  return before && before->seen.load(std::memory_order_acquire);
}

[[noreturn]] void refuse_stale() {
  throw Error(EIO,
              "the backup's image changed in the repository since this file was read; it reads the new version "
              "once no process holds it any more (the kernel forgets it)");
}

}  // namespace

void NodeFiles::check_fresh(uint64_t node) {
  std::lock_guard lock(mutex_);
  if (auto it = read_through_.find(node); it != read_through_.end() && stale(it->second)) refuse_stale();
}

std::shared_ptr<const NodeFiles::Held> NodeFiles::held(uint64_t node) {
  auto h = open_.find(node);
  return h ? h : open_.insert(node, std::make_shared<const Held>(tree_, node), 1);
}

size_t NodeFiles::read(uint64_t node, uint64_t offset, std::span<std::byte> buf) {
  check_fresh(node);
  Mark mark;
  const size_t n = tree_.read(*held(node)->file, offset, buf, &mark);
  if (!read_through(node, std::move(mark))) refuse_stale();
  return n;
}

std::optional<RestoreTree::MappedRead> NodeFiles::map_read(uint64_t node, uint64_t offset, size_t size) {
  check_fresh(node);
  auto mapped = tree_.map_read(*held(node)->file, offset, size);
  if (mapped && !read_through(node, mapped->read_through)) refuse_stale();
  return mapped;
}

bool NodeFiles::read_through(uint64_t node, Mark mark) {
  std::lock_guard lock(mutex_);
  Mark& before = read_through_[node];
  // Two reads of one node can race across a change: one through the old
  // attach, one through its replacement. The kernel may cache either's
  // pages, so neither may join the other's: bytes from a changed attach
  // are refused, and so are new bytes after old ones.
  if (stale(mark) || (before != mark && stale(before))) return false;
  before = std::move(mark);
  return true;
}

void NodeFiles::forget(uint64_t node) {
  {
    std::lock_guard lock(mutex_);
    read_through_.erase(node);
  }
  open_.erase(node);
}

}  // namespace sendense
