// The tree the daemon serves, in plain values: root, by-vm/, backup folders
// (from the catalog snapshot only) and the volumes inside them (through the
// attach manager). Knows node ids, nothing of FUSE; the FUSE edge
// (fuse_ops.cpp) turns these answers into replies and errors into errnos.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuse/attach_manager.h"
#include "fuse/catalog_view.h"

namespace sendense {

struct TreeTimeouts {
  double synthetic = 1.0;       // root, by-vm, backup folders: new backups appear quickly
  double backup = 86400.0;      // inside a backup: it never changes
};

struct NodeAttr {
  struct stat st {};
  uint64_t generation = 0;
  double timeout = 0;           // attr and entry timeout
};

struct NodeEntry {
  std::string name;
  uint64_t node = 0;
  uint32_t type = 0;            // S_IFMT bits
  uint64_t next = 0;            // the cookie listing resumes at after this entry
};

// Entries of a folder from a cookie on. The catalog's folders come whole
// (from cookie 0, whatever was asked; cookies are 1 + the index); a folder
// inside a backup comes a page (at most RestoreTree::kPageEntries entries)
// at a time, empty past its end, so nobody holds more than a page of a
// folder an image made.
struct Listing {
  std::vector<NodeEntry> entries;
  uint64_t from = 0;   // the cookie `entries` starts at
  bool end = false;    // nothing follows these entries (a whole listing, or a short page)
  bool attrs = false;  // the entries' attributes are at hand (a catalog folder, or a page read for readdirplus)
  // A backup's folder: the change mark of the attach the page came from
  // (see NodeFiles: pages of two versions of an image must not be joined).
  std::shared_ptr<const AttachedBackup::ChangeMark> read_through;
};

// A regular file being read: one the kernel opened (--attach kernel, or a
// handle a previous run gave out), or one read by node without an open
// (fuse/node_files.h). It pins nothing: NFS servers keep files open for as
// long as they like, so an open file must not keep its backup attached.
// It names its node and remembers the reader handle of the attach it last
// read through; when that attach was detached (idle, evicted) the next read
// attaches the backup again and opens the file anew. One whose image
// changed under it answers EIO instead (new opens get the new attach).
//
// The kernel backend is the exception: its reader finds an inode again only
// by the names it learned on the attach that handed it out (a host mount
// has no open-by-inode), so a handle on a re-attached kernel volume would be
// ESTALE. There a file the kernel opened keeps its backup attached.
struct OpenFile {
  explicit OpenFile(uint64_t n) : node(n) {}
  const uint64_t node;
  AttachedBackupPtr pin;                  // set only for kernel-backend volumes
  std::mutex mutex;                       // guards the two below
  std::weak_ptr<AttachedBackup> backup;   // the attach `handle` belongs to
  uint64_t handle = 0;
};

// The operator's tree shows every backup with the guest's owners and modes,
// and tenants/<name>/ as empty folders. A tenant's view (its own FUSE mount,
// stacked on tenants/<name>/) is a tree of the same shape holding only the
// backups of that tenant's VMs: every node id is checked against the tenant,
// so a name, "..", a guessed inode or an NFS handle of another tenant's file
// finds nothing (ENOENT). Inside it everything is owned by the tenant's
// uid/gid and readable by them (folders 0550, files 0440, 0550 when the guest
// had an execute bit): guest owners are numbers from another machine, and a
// customer must be able to read all of its own files through its share.
class RestoreTree {
 public:
  // `tenant` empty: the operator's tree.
  RestoreTree(CatalogView& view, AttachManager& manager, TreeTimeouts timeouts, std::string tenant = {});

  // nullopt: no such name (a negative entry the kernel may cache for the
  // returned timeout). Throws Error for everything else.
  std::optional<NodeAttr> lookup(uint64_t parent, std::string_view name, double* negative_timeout);
  NodeAttr getattr(uint64_t node);
  static constexpr size_t kPageEntries = 1024;
  // `cookie`: 0 for the start, else the `next` of an entry listed before.
  // `attrs_next`: every entry's attributes will be asked next (readdirplus).
  Listing list(uint64_t dir, uint64_t cookie, bool attrs_next);
  std::string readlink(uint64_t node);
  // The attached backup a folder inside a backup belongs to (attaching it),
  // or nullptr for the root and by-vm/.
  AttachedBackupPtr backup_of(uint64_t dir);

  // Opens a regular file (its reader handle on the current attach).
  std::shared_ptr<OpenFile> open(uint64_t node);
  // Whole small files of one volume for reading ahead (prefetch.h): for
  // each (node, size), its bytes or nothing. Only while the backup is
  // attached, current and its pages the kernel's to keep (not the
  // replacement of a changed image), and seen by this view: it never
  // attaches. `read_through` as for read().
  std::vector<std::vector<std::byte>> read_ahead(std::span<const std::pair<uint64_t, uint64_t>> files,
                                                 std::shared_ptr<const AttachedBackup::ChangeMark>* read_through);
  // Whether bytes read ahead of `node` may still be handed out: read_ahead
  // would read it now (same rules; never attaches).
  bool reads_ahead(uint64_t node);
  // `read_through`, when given, is set to the change mark of the attach
  // the bytes came from.
  size_t read(OpenFile& file, uint64_t offset, std::span<std::byte> buf,
              std::shared_ptr<const AttachedBackup::ChangeMark>* read_through = nullptr);
  // Where read() would find bytes [offset, offset + size) of `file` in the
  // backup's image files, when its reader can say (Filesystem::map_read),
  // with the attach that keeps those files open until the bytes are sent.
  struct MappedRead {
    AttachedBackupPtr backup;
    std::vector<Extent> extents;
    std::shared_ptr<const AttachedBackup::ChangeMark> read_through;
  };
  std::optional<MappedRead> map_read(OpenFile& file, uint64_t offset, size_t size);
  // `activity`: a request of the caller's (a RELEASE) keeps the backup from
  // going idle; a table dropping a file it kept (node_files.h) does not.
  void close(OpenFile& file, bool activity = true);
  // Whether open files must be tracked (the kernel backend's pins, see
  // OpenFile): with --attach kernel every volume is the kernel's.
  bool open_files_pin() const { return manager_.options().attach_mode == "kernel"; }

  std::vector<std::string> listxattr(uint64_t node);
  std::optional<std::string> getxattr(uint64_t node, std::string_view name);
  FsStat statfs(uint64_t node);

 private:
  struct Resolved {
    AttachedBackupPtr backup;
    const AttachedVolume* volume = nullptr;
    uint64_t ino = 0;
  };
  Resolved resolve(uint64_t node);
  std::vector<NodeEntry> catalog_folder(uint64_t dir);
  Listing list_volume(uint64_t dir, uint64_t cookie, bool attrs_next);
  std::optional<NodeAttr> lookup_node(const CatalogSnapshot& snap, uint64_t parent, std::string_view name,
                                      double* negative_timeout);
  NodeAttr node_attr(const CatalogSnapshot& snap, uint64_t node);
  // A tenant's view: the tenant's owner on everything (see the class comment).
  NodeAttr scoped(const CatalogSnapshot& snap, NodeAttr a) const;
  const std::vector<std::pair<std::string, size_t>>& vm_folder(const CatalogSnapshot& snap, uint64_t node) const;
  // The attach to read `file` through and its reader handle there,
  // attaching and opening again when its attach is gone.
  std::pair<Resolved, uint64_t> reader_of(OpenFile& file);
  // Whether this view shows the backup now (a VM can be unassigned while
  // one of its files is open in the tenant's view).
  bool visible_backup(const std::string& backup_id) const;
  // The attached backup and volume of `node` when read_ahead may read it.
  std::pair<AttachedBackupPtr, const AttachedVolume*> read_ahead_volume(uint64_t node);
  // Folders the tree makes up (root, by-vm, vm folders: 0555; a backup's
  // folder: backup_dir_mode), owned by the daemon's user.
  NodeAttr synthetic_dir(uint64_t node, int64_t mtime, mode_t perms = 0555) const;
  NodeAttr synthetic_link(uint64_t node, int64_t mtime, size_t target_length) const;
  NodeAttr volume_attr(const Resolved& r, const Attr& attr) const;
  uint64_t volume_node(const AttachedVolume& v, uint64_t ino) const;
  const BackupRecord& backup_of_node(const CatalogSnapshot& snap, uint64_t node) const;
  std::string link_target(const CatalogSnapshot& snap, uint64_t node) const;

  CatalogView& view_;
  AttachManager& manager_;
  TreeTimeouts timeouts_;
  const std::string tenant_;
  int64_t started_at_;
};

}  // namespace sendense
