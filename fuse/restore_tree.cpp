#include "fuse/restore_tree.h"

#include <unistd.h>

#include <chrono>

#include "fuse/node_id.h"
#include "readers/common/error.h"

namespace sendense {

namespace {

constexpr const char* kByVm = "by-vm";
constexpr const char* kTenants = "tenants";

// Guest files keep the guest's owners and modes, and a guest uid is just a
// number on the host: with the tree open to all, a host user whose uid
// matches a guest's (nobody, a service account) would read that guest's
// private files. So only the daemon's user (root) enters a backup; customers
// get their own backups through per-tenant views and re-exports.
constexpr mode_t kBackupDirMode = 0500;

int64_t wall_now() {
  using namespace std::chrono;
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

// The node of by-vm/<vm>/latest: it carries its target's num (node_id.h).
uint64_t latest_node(const CatalogSnapshot& snap, const std::vector<std::pair<std::string, size_t>>& entries) {
  return node::synthetic(node::Kind::latest_link, static_cast<uint64_t>(snap.backups[entries.back().second].num));
}

}  // namespace

RestoreTree::RestoreTree(CatalogView& view, AttachManager& manager, TreeTimeouts timeouts, std::string tenant)
    : view_(view), manager_(manager), timeouts_(timeouts), tenant_(std::move(tenant)), started_at_(wall_now()) {}

// The vm folder, or ENOENT when the vm has no backup any more or is not
// this view's to show.
const std::vector<std::pair<std::string, size_t>>& RestoreTree::vm_folder(const CatalogSnapshot& snap,
                                                                          uint64_t node) const {
  auto vm = snap.vm_by_key.find(node::key_of(node));
  if (vm == snap.vm_by_key.end() || !snap.sees(tenant_, vm->second)) throw Error(ENOENT, "no such vm folder");
  return snap.by_vm.at(vm->second);
}

NodeAttr RestoreTree::scoped(const CatalogSnapshot& snap, NodeAttr a) const {
  if (tenant_.empty()) return a;
  const TenantRecord* t = snap.tenant(tenant_);
  if (!t) throw Error(ENOENT, "tenant no longer in the catalog", tenant_);
  a.st.st_uid = t->uid.value_or(0);
  a.st.st_gid = t->gid.value_or(0);
  const mode_t type = a.st.st_mode & S_IFMT;
  mode_t perms = 0440;
  if (type == S_IFDIR) perms = 0550;
  else if (type == S_IFLNK) perms = 0777;
  else if (type == S_IFREG && (a.st.st_mode & 0111)) perms = 0550;
  a.st.st_mode = type | perms;
  return a;
}

NodeAttr RestoreTree::synthetic_dir(uint64_t node, int64_t mtime, mode_t perms) const {
  NodeAttr a;
  a.st.st_ino = node;
  a.st.st_mode = S_IFDIR | perms;
  a.st.st_uid = ::geteuid();
  a.st.st_gid = ::getegid();
  // nlink 1 says "count unknown": find(1) must not skip subfolders.
  a.st.st_nlink = 1;
  a.st.st_size = 4096;
  a.st.st_blksize = 4096;
  a.st.st_mtim.tv_sec = a.st.st_ctim.tv_sec = a.st.st_atim.tv_sec = mtime;
  a.timeout = timeouts_.synthetic;
  return a;
}

NodeAttr RestoreTree::synthetic_link(uint64_t node, int64_t mtime, size_t target_length) const {
  NodeAttr a = synthetic_dir(node, mtime);
  a.st.st_mode = S_IFLNK | 0777;
  a.st.st_size = static_cast<off_t>(target_length);
  return a;
}

uint64_t RestoreTree::volume_node(const AttachedVolume& v, uint64_t ino) const {
  auto n = node::volume_node(v.id, ino);
  if (!n) throw Error(EOVERFLOW, "inode " + std::to_string(ino) + " does not fit the node-id space", v.name);
  return *n;
}

NodeAttr RestoreTree::volume_attr(const Resolved& r, const Attr& attr) const {
  NodeAttr a;
  a.st.st_ino = volume_node(*r.volume, attr.ino);
  a.st.st_mode = attr.mode;
  a.st.st_nlink = attr.nlink;
  a.st.st_uid = attr.uid;
  a.st.st_gid = attr.gid;
  a.st.st_size = static_cast<off_t>(attr.size);
  a.st.st_blocks = static_cast<blkcnt_t>(attr.blocks);
  a.st.st_blksize = 4096;
  a.st.st_rdev = attr.rdev;
  a.st.st_atim = attr.atime;
  a.st.st_mtim = attr.mtime;
  a.st.st_ctim = attr.ctime;
  a.generation = attr.generation;
  a.timeout = timeouts_.backup;
  return a;
}

const BackupRecord& RestoreTree::backup_of_node(const CatalogSnapshot& snap, uint64_t node) const {
  const BackupRecord* b = snap.find_num(static_cast<int64_t>(node::key_of(node)));
  if (!b || !snap.sees(tenant_, b->vm)) throw Error(ENOENT, "backup no longer in the catalog");
  return *b;
}

RestoreTree::Resolved RestoreTree::resolve(uint64_t node) {
  const int64_t vid = node::volume_of(node);
  auto backup_id = view_.backup_of_volume(vid);
  if (!backup_id) throw Error(ESTALE, "unknown volume id " + std::to_string(vid));
  if (!tenant_.empty()) {
    auto snap = view_.snapshot();
    const BackupRecord* b = snap->find(*backup_id);
    if (!b || !snap->sees(tenant_, b->vm)) throw Error(ENOENT, "no such file");
  }
  Resolved r;
  r.backup = manager_.acquire(*backup_id);
  r.volume = r.backup->volume(vid);
  if (!r.volume) throw Error(ESTALE, "volume id " + std::to_string(vid) + " is no longer readable", *backup_id);
  r.ino = node::inode_of(node);
  return r;
}

std::vector<std::vector<std::byte>> RestoreTree::read_ahead(std::span<const std::pair<uint64_t, uint64_t>> files,
                                                            std::shared_ptr<const AttachedBackup::ChangeMark>* read_through) {
  std::vector<std::vector<std::byte>> none(files.size());
  if (files.empty()) return none;
  const auto [b, v] = read_ahead_volume(files.front().first);
  if (!v) return none;
  const int64_t vid = node::volume_of(files.front().first);
  std::vector<Filesystem::WholeFile> asked;
  for (const auto& [node, size] : files) {
    if (!node::is_volume_node(node) || node::volume_of(node) != vid) return none;
    asked.push_back({node::inode_of(node), size});
  }
  *read_through = b->change_seen;
  return v->fs->read_files(asked);
}

std::pair<AttachedBackupPtr, const AttachedVolume*> RestoreTree::read_ahead_volume(uint64_t node) {
  if (!node::is_volume_node(node)) return {};
  const int64_t vid = node::volume_of(node);
  auto backup_id = view_.backup_of_volume(vid);
  if (!backup_id || (!tenant_.empty() && !visible_backup(*backup_id))) return {};
  AttachedBackupPtr b = manager_.find(*backup_id);
  const AttachedVolume* v = b ? b->volume(vid) : nullptr;
  if (!v || !b->current() || b->replaced_changed) return {};
  return {b, v};
}

bool RestoreTree::reads_ahead(uint64_t node) { return read_ahead_volume(node).second != nullptr; }

std::optional<NodeAttr> RestoreTree::lookup(uint64_t parent, std::string_view name, double* negative_timeout) {
  auto snap = view_.snapshot();
  auto attr = lookup_node(*snap, parent, name, negative_timeout);
  if (!attr) return attr;
  return scoped(*snap, *attr);
}

NodeAttr RestoreTree::getattr(uint64_t node) {
  auto snap = view_.snapshot();
  return scoped(*snap, node_attr(*snap, node));
}

std::optional<NodeAttr> RestoreTree::lookup_node(const CatalogSnapshot& snapshot, uint64_t parent,
                                                 std::string_view name, double* negative_timeout) {
  *negative_timeout = timeouts_.synthetic;
  const CatalogSnapshot* snap = &snapshot;
  if (name == ".") return node_attr(snapshot, parent);
  if (parent == node::kRoot) {
    if (name == "..") return node_attr(snapshot, node::kRoot);
    if (name == kByVm) return synthetic_dir(node::kByVm, started_at_);
    if (name == kTenants && tenant_.empty()) return synthetic_dir(node::kTenants, started_at_);
    const BackupRecord* b = snap->find(std::string(name));
    if (!b || !snap->sees(tenant_, b->vm)) return std::nullopt;
    return synthetic_dir(node::synthetic(node::Kind::backup_dir, static_cast<uint64_t>(b->num)), b->created_at,
                         kBackupDirMode);
  }
  if (parent == node::kByVm) {
    if (name == "..") return node_attr(snapshot, node::kRoot);
    auto it = snap->by_vm.find(std::string(name));
    if (it == snap->by_vm.end() || !snap->sees(tenant_, it->first)) return std::nullopt;
    return node_attr(snapshot, node::synthetic(node::Kind::vm_dir, node::vm_key(it->first)));
  }
  if (parent == node::kTenants && tenant_.empty()) {
    if (name == "..") return node_attr(snapshot, node::kRoot);
    const TenantRecord* t = snap->tenant(std::string(name));
    if (!t) return std::nullopt;
    return node_attr(snapshot, node::synthetic(node::Kind::tenant_dir, static_cast<uint64_t>(t->num)));
  }
  if (node::is_synthetic(parent)) {
    switch (node::kind_of(parent)) {
      case node::Kind::vm_dir: {
        if (name == "..") return node_attr(snapshot, node::kByVm);
        const auto& entries = vm_folder(*snap, parent);
        if (name == "latest" && !entries.empty()) return node_attr(snapshot, latest_node(*snap, entries));
        for (const auto& [entry, index] : entries)
          if (entry == name)
            return node_attr(snapshot,
                             node::synthetic(node::Kind::dated_link, static_cast<uint64_t>(snap->backups[index].num)));
        return std::nullopt;
      }
      case node::Kind::tenant_dir:
        if (name == "..") return node_attr(snapshot, node::kTenants);
        node_attr(snapshot, parent);  // ENOENT when it is gone
        return std::nullopt;
      case node::Kind::backup_dir: {
        if (name == "..") return node_attr(snapshot, node::kRoot);
        const BackupRecord& b = backup_of_node(*snap, parent);
        auto attached = manager_.acquire(b.id);
        const AttachedVolume* v = attached->volume_named(name);
        if (!v) return std::nullopt;
        Resolved r{attached, v, v->fs->root_ino()};
        return volume_attr(r, v->fs->getattr(r.ino));
      }
      default:
        throw Error(ENOTDIR, "not a folder");
    }
  }
  Resolved r = resolve(parent);
  *negative_timeout = timeouts_.backup;
  if (name == ".." && r.ino == r.volume->fs->root_ino())
    return node_attr(snapshot, node::synthetic(node::Kind::backup_dir, static_cast<uint64_t>(r.backup->num)));
  // (A name shown escaped finds its entry too: readers/fs/paged_listing.h.)
  auto attr = r.volume->fs->lookup(r.ino, name);
  if (!attr) return std::nullopt;
  return volume_attr(r, *attr);
}

NodeAttr RestoreTree::node_attr(const CatalogSnapshot& snapshot, uint64_t node) {
  if (node == node::kRoot || node == node::kByVm || (node == node::kTenants && tenant_.empty()))
    return synthetic_dir(node, started_at_);
  if (node::is_synthetic(node)) {
    const CatalogSnapshot* snap = &snapshot;
    switch (node::kind_of(node)) {
      case node::Kind::backup_dir:
        return synthetic_dir(node, backup_of_node(*snap, node).created_at, kBackupDirMode);
      case node::Kind::tenant_dir:
        if (!tenant_.empty() || !snap->tenant_num(static_cast<int64_t>(node::key_of(node))))
          throw Error(ENOENT, "no such tenant");
        return synthetic_dir(node, started_at_);
      case node::Kind::vm_dir: {
        const auto& entries = vm_folder(*snap, node);
        return synthetic_dir(node, entries.empty() ? 0 : snap->backups[entries.back().second].created_at);
      }
      case node::Kind::dated_link:
      case node::Kind::latest_link: {
        const BackupRecord& b = backup_of_node(*snap, node);
        return synthetic_link(node, b.created_at, link_target(*snap, node).size());
      }
    }
    throw Error(ENOENT, "unknown node");
  }
  Resolved r = resolve(node);
  return volume_attr(r, r.volume->fs->getattr(r.ino));
}

// Both kinds of by-vm links carry their target's backup num.
std::string RestoreTree::link_target(const CatalogSnapshot& snap, uint64_t node) const {
  return "../../" + backup_of_node(snap, node).id;
}

Listing RestoreTree::list(uint64_t dir, uint64_t cookie, bool attrs_next) {
  if (node::is_volume_node(dir)) return list_volume(dir, cookie, attrs_next);
  Listing listing;
  listing.entries = catalog_folder(dir);
  listing.end = true;
  listing.attrs = true;  // getattr of a catalog node reads the snapshot only
  for (size_t i = 0; i < listing.entries.size(); ++i) listing.entries[i].next = i + 1;
  return listing;
}

std::vector<NodeEntry> RestoreTree::catalog_folder(uint64_t dir) {
  std::vector<NodeEntry> out;
  auto snap = view_.snapshot();
  if (dir == node::kRoot) {
    out.push_back({".", node::kRoot, S_IFDIR});
    out.push_back({"..", node::kRoot, S_IFDIR});
    out.push_back({kByVm, node::kByVm, S_IFDIR});
    if (tenant_.empty()) out.push_back({kTenants, node::kTenants, S_IFDIR});
    else if (!snap->tenant(tenant_)) throw Error(ENOENT, "tenant no longer in the catalog", tenant_);
    for (const auto& b : snap->backups)
      if (snap->sees(tenant_, b.vm))
        out.push_back({b.id, node::synthetic(node::Kind::backup_dir, static_cast<uint64_t>(b.num)), S_IFDIR});
    return out;
  }
  if (dir == node::kByVm) {
    out.push_back({".", node::kByVm, S_IFDIR});
    out.push_back({"..", node::kRoot, S_IFDIR});
    for (const auto& [vm, entries] : snap->by_vm)
      if (snap->sees(tenant_, vm)) out.push_back({vm, node::synthetic(node::Kind::vm_dir, node::vm_key(vm)), S_IFDIR});
    return out;
  }
  if (dir == node::kTenants && tenant_.empty()) {
    out.push_back({".", node::kTenants, S_IFDIR});
    out.push_back({"..", node::kRoot, S_IFDIR});
    for (const auto& t : snap->tenants)
      out.push_back({t.name, node::synthetic(node::Kind::tenant_dir, static_cast<uint64_t>(t.num)), S_IFDIR});
    return out;
  }
  if (node::is_synthetic(dir)) {
    switch (node::kind_of(dir)) {
      case node::Kind::tenant_dir:
        node_attr(*snap, dir);  // ENOENT when it is gone
        out.push_back({".", dir, S_IFDIR});
        out.push_back({"..", node::kTenants, S_IFDIR});
        return out;
      case node::Kind::vm_dir: {
        const auto& entries = vm_folder(*snap, dir);
        out.push_back({".", dir, S_IFDIR});
        out.push_back({"..", node::kByVm, S_IFDIR});
        for (const auto& [name, index] : entries)
          out.push_back(
              {name, node::synthetic(node::Kind::dated_link, static_cast<uint64_t>(snap->backups[index].num)),
               S_IFLNK});
        if (!entries.empty()) out.push_back({"latest", latest_node(*snap, entries), S_IFLNK});
        return out;
      }
      case node::Kind::backup_dir: {
        const BackupRecord& b = backup_of_node(*snap, dir);
        auto attached = manager_.acquire(b.id);
        out.push_back({".", dir, S_IFDIR});
        out.push_back({"..", node::kRoot, S_IFDIR});
        for (const auto& v : attached->volumes) out.push_back({v.name, volume_node(v, v.fs->root_ino()), S_IFDIR});
        return out;
      }
      default:
        throw Error(ENOTDIR, "not a folder");
    }
  }
  throw Error(ENOENT, "no such folder");
}

Listing RestoreTree::list_volume(uint64_t dir, uint64_t cookie, bool attrs_next) {
  Resolved r = resolve(dir);
  const bool at_root = r.ino == r.volume->fs->root_ino();
  Listing listing;
  listing.from = cookie;
  listing.attrs = attrs_next;
  listing.read_through = r.backup->change_seen;
  auto page = r.volume->fs->readdir_page(r.ino, cookie, kPageEntries, attrs_next);
  // A short page is the last (filesystem.h): the kernel's request past it
  // then costs no request to the reader (most folders fit one page).
  listing.end = page.size() < kPageEntries;
  listing.entries.reserve(page.size());
  for (auto& e : page) {
    uint64_t n = volume_node(*r.volume, e.ino);
    if (e.name == ".") n = dir;
    else if (e.name == ".." && at_root) n = node::synthetic(node::Kind::backup_dir, static_cast<uint64_t>(r.backup->num));
    listing.entries.push_back({std::move(e.name), n, e.type, e.next});
  }
  return listing;
}

AttachedBackupPtr RestoreTree::backup_of(uint64_t dir) {
  if (node::is_volume_node(dir)) return resolve(dir).backup;
  if (node::is_synthetic(dir) && node::kind_of(dir) == node::Kind::backup_dir)
    return manager_.acquire(backup_of_node(*view_.snapshot(), dir).id);
  return nullptr;
}

std::string RestoreTree::readlink(uint64_t node) {
  if (node::is_synthetic(node)) {
    auto k = node::kind_of(node);
    if (k != node::Kind::dated_link && k != node::Kind::latest_link) throw Error(EINVAL, "not a symlink");
    return link_target(*view_.snapshot(), node);
  }
  if (!node::is_volume_node(node)) throw Error(EINVAL, "not a symlink");
  Resolved r = resolve(node);
  return r.volume->fs->readlink(r.ino);
}

std::shared_ptr<OpenFile> RestoreTree::open(uint64_t node) {
  if (!node::is_volume_node(node)) throw Error(EISDIR, "not a regular file");
  Resolved r = resolve(node);
  auto file = std::make_shared<OpenFile>(node);
  file->handle = r.volume->fs->open(r.ino);
  file->backup = r.backup;
  if (r.volume->backend == "kernel") file->pin = r.backup;
  return file;
}

bool RestoreTree::visible_backup(const std::string& backup_id) const {
  auto snap = view_.snapshot();
  const BackupRecord* b = snap->find(backup_id);
  return b && snap->sees(tenant_, b->vm);
}

std::pair<RestoreTree::Resolved, uint64_t> RestoreTree::reader_of(OpenFile& file) {
  std::lock_guard lock(file.mutex);
  const int64_t vid = node::volume_of(file.node);
  AttachedBackupPtr last = file.backup.lock();
  // Opened on a version of the image that has since changed: this handle
  // never reads on in the new version (bytes of two versions in one file).
  if (last && last->images_changed())
    throw Error(EIO, "the backup's image changed in the repository since this file was opened",
                last->backup_id);
  if (last && last->current() && (tenant_.empty() || visible_backup(last->backup_id))) {
    if (const AttachedVolume* v = last->volume(vid)) {
      last->touch();
      return {Resolved{last, v, node::inode_of(file.node)}, file.handle};
    }
  }
  // Its attach was let go (or this handle was adopted after a restart):
  // attach again, open again, and close the handle on the old attach.
  Resolved r = resolve(file.node);
  const uint64_t handle = r.volume->fs->open(r.ino);
  if (last) {
    if (const AttachedVolume* v = last->volume(vid)) v->fs->release(file.handle);
  }
  file.backup = r.backup;
  file.handle = handle;
  return {std::move(r), handle};
}

size_t RestoreTree::read(OpenFile& file, uint64_t offset, std::span<std::byte> buf,
                         std::shared_ptr<const AttachedBackup::ChangeMark>* read_through) {
  auto [r, handle] = reader_of(file);  // r holds the attach for the length of the read
  const size_t n = r.volume->fs->read(handle, offset, buf);
  if (read_through) *read_through = r.backup->change_seen;
  return n;
}

std::optional<RestoreTree::MappedRead> RestoreTree::map_read(OpenFile& file, uint64_t offset, size_t size) {
  auto [r, handle] = reader_of(file);
  auto extents = r.volume->fs->map_read(handle, offset, size);
  if (!extents) return std::nullopt;
  return MappedRead{r.backup, std::move(*extents), r.backup->change_seen};
}

void RestoreTree::close(OpenFile& file, bool activity) {
  std::lock_guard lock(file.mutex);
  AttachedBackupPtr last = file.backup.lock();
  if (!last) return;  // its attach is gone, and the reader with it
  if (activity) last->touch();
  if (const AttachedVolume* v = last->volume(node::volume_of(file.node))) v->fs->release(file.handle);
  file.backup.reset();
  file.pin.reset();
}

std::vector<std::string> RestoreTree::listxattr(uint64_t node) {
  if (!node::is_volume_node(node)) return {};
  Resolved r = resolve(node);
  return r.volume->fs->listxattr(r.ino);
}

std::optional<std::string> RestoreTree::getxattr(uint64_t node, std::string_view name) {
  if (!node::is_volume_node(node)) return std::nullopt;
  Resolved r = resolve(node);
  return r.volume->fs->getxattr(r.ino, name);
}

FsStat RestoreTree::statfs(uint64_t node) {
  if (!node::is_volume_node(node)) return FsStat{};
  Resolved r = resolve(node);
  return r.volume->fs->statfs();
}

}  // namespace sendense
