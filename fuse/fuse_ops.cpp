#include "fuse/fuse_ops.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "fuse/node_id.h"
#include "fuse/restore_tree.h"
#include "readers/block/image_file.h"
#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace {

FuseContext& context_of(fuse_req_t req) { return *static_cast<FuseContext*>(fuse_req_userdata(req)); }
RestoreTree& tree_of(fuse_req_t req) { return context_of(req).tree; }

// Before the reply: replying frees the request.
void count_bytes(fuse_req_t req, std::string_view op, size_t bytes) {
  if (Metrics* m = context_of(req).metrics) m->fuse_bytes(op, bytes);
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Runs `body` (which replies on success) and turns what it throws into one
// error reply. Expected misses are debug; damage and I/O failures are logged.
template <class Body>
void checked(fuse_req_t req, const char* op, uint64_t node, Body&& body) {
  if (log::enabled(log::Level::debug)) log::debug("op", {{"op", op}, {"node", hex(node)}});
  Metrics* metrics = context_of(req).metrics;
  if (metrics) metrics->fuse_request(op);
  try {
    body();
  } catch (const Error& e) {
    const int code = e.code();
    if (code == EIO || code == EBUSY || code == ESTALE || code == EOVERFLOW) {
      if (metrics) metrics->failure("op_failed");
      log::warn("op_failed", {{"op", op}, {"node", hex(node)}, {"errno", std::strerror(code)}, {"error", e.what()}});
    } else {
      log::debug("op_error", {{"op", op}, {"node", hex(node)}, {"errno", std::strerror(code)}, {"error", e.what()}});
    }
    fuse_reply_err(req, code);
  } catch (const std::bad_alloc&) {
    if (metrics) metrics->failure("op_failed");
    log::error("op_failed", {{"op", op}, {"node", hex(node)}, {"error", "out of memory"}});
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    if (metrics) metrics->failure("op_failed");
    log::error("op_failed", {{"op", op}, {"node", hex(node)}, {"error", e.what()}});
    fuse_reply_err(req, EIO);
  }
}

fuse_entry_param entry_of(const NodeAttr& a) {
  fuse_entry_param e{};
  e.ino = a.st.st_ino;
  e.generation = a.generation;
  e.attr = a.st;
  e.attr_timeout = a.timeout;
  e.entry_timeout = a.timeout;
  return e;
}


void op_init(void* userdata, fuse_conn_info* conn) {
  auto& context = *static_cast<FuseContext*>(userdata);
  // No OPEN, no RELEASE: reads find their reader by node (node_files.h).
  // Kept only where an open file must pin its backup (--attach kernel).
  // The kernel remembers the choice for the connection's life, across a
  // takeover by the next run (which then reads by node whatever it says).
  context.no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) && context.read_only_mount &&
                    !context.tree.open_files_pin();
  // Without OPEN an O_TRUNC open would cut the kernel's view of the file
  // on its own; without atomic O_TRUNC it asks (SETATTR: EROFS) instead.
  if (context.no_open) conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // readdirplus when the kernel thinks it pays (ls -l, a walk); the root's
  // attributes are synthetic, so it never attaches anything.
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;  // see reply_mapped
  conn->max_read = kMaxRead;  // the mount's option (fuse_ops.h); libfuse checks both agree
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  checked(req, "lookup", parent, [&] {
    double negative_timeout = 0;
    auto attr = tree_of(req).lookup(parent, name, &negative_timeout);
    if (!attr) {
      fuse_entry_param e{};
      e.ino = 0;  // a negative entry the kernel may cache
      e.entry_timeout = negative_timeout;
      fuse_reply_entry(req, &e);
      return;
    }
    fuse_entry_param e = entry_of(*attr);
    fuse_reply_entry(req, &e);
  });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t) {
  context_of(req).node_files.forget(ino);
  fuse_reply_none(req);
}
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) context_of(req).node_files.forget(forgets[i].ino);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  checked(req, "getattr", ino, [&] {
    NodeAttr a = tree_of(req).getattr(ino);
    fuse_reply_attr(req, &a.st, a.timeout);
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  checked(req, "readlink", ino, [&] {
    std::string target = tree_of(req).readlink(ino);
    count_bytes(req, "readlink", target.size());
    fuse_reply_readlink(req, target.c_str());
  });
}

// Makes `listing` what the open folder holds.
void keep_listing(DirHandle& h, Listing&& listing) {
  h.entries = std::move(listing.entries);
  h.from = listing.from;
  h.end = listing.end;
  h.attrs = listing.attrs;
  if (listing.read_through) h.read_through = std::move(listing.read_through);
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  checked(req, "opendir", ino, [&] {
    auto handle = std::make_shared<DirHandle>();
    // The first page now: errors (ENOTDIR, a backup that cannot attach)
    // belong to opendir. Read with attributes: the kernel's first
    // request is a readdirplus.
    keep_listing(*handle, tree_of(req).list(ino, 0, true));
    // A backup never changes: let the kernel cache it (unless this attach
    // replaced one whose image did change: then the cache is of that one).
    if (node::is_volume_node(ino)) {
      AttachedBackupPtr backup = tree_of(req).backup_of(ino);
      if (!(backup && backup->replaced_changed)) {
        fi->cache_readdir = 1;
        fi->keep_cache = 1;
      }
      const AttachedVolume* volume = backup ? backup->volume(node::volume_of(ino)) : nullptr;
      if (volume && volume->backend == "kernel") handle->pin = backup;
    }
    auto& dirs = context_of(req).dirs;
    fi->fh = dirs.add(std::move(handle));
    if (fuse_reply_open(req, fi) != 0) dirs.take(fi->fh);
  });
}

// The open folder behind `fh`; one a previous run of the daemon opened is
// taken over (its pages are read again as its offsets ask).
std::shared_ptr<DirHandle> dir_handle(fuse_req_t req, uint64_t fh) {
  auto& dirs = context_of(req).dirs;
  if (auto handle = dirs.find(fh)) return handle;
  return dirs.adopt(fh, std::make_shared<DirHandle>());
}

// Hands `add` the entries of the folder from `offset` (a cookie) on until
// it returns false, from the handle's listing or from the page `offset`
// starts when the handle holds none that does. The caller holds h.mutex.
template <typename Add>
void list_from(fuse_req_t req, fuse_ino_t ino, DirHandle& h, uint64_t offset, bool attrs, Add add) {
  // Where `offset` falls in what the handle holds: the index to go on
  // from (cookies grow along a listing), or npos.
  auto start_in = [&]() -> size_t {
    if (offset == h.from) return 0;
    auto it = std::lower_bound(h.entries.begin(), h.entries.end(), offset,
                               [](const NodeEntry& e, uint64_t o) { return e.next < o; });
    if (it == h.entries.end() || it->next != offset) return std::string::npos;
    return static_cast<size_t>(it - h.entries.begin()) + 1;
  };
  size_t start = start_in();
  const bool past_page = start == h.entries.size() && !h.end;
  if (start == std::string::npos || past_page || (attrs && !h.attrs)) {
    Listing listing = tree_of(req).list(ino, offset, attrs);
    // The pages of one open folder all come from one version of the image:
    // once the attach an earlier page came from saw its image change, the
    // rest of the folder is refused, not joined from the new version.
    auto seen = [](const auto& mark) { return mark && mark->seen.load(std::memory_order_acquire); };
    if (seen(listing.read_through) || seen(h.read_through))
      throw Error(EIO, "the backup's image changed in the repository while this folder was being listed; open it again");
    keep_listing(h, std::move(listing));
    start = start_in();
    if (start == std::string::npos) return;  // an offset no listing has: the end
  }
  for (size_t i = start; i < h.entries.size(); ++i)
    if (!add(h.entries[i])) return;
}

// The small regular files of the folder page `h` holds, for reading ahead
// (prefetch.h), once per page: the kernel lists a folder's first part with
// attributes and the rest without, but the page (up to kPageEntries)
// brought them all, so asking them costs no request. The caller holds h.mutex.
void note_page(FuseContext& context, fuse_ino_t ino, DirHandle& h) {
  if (!context.no_open || !node::is_volume_node(ino) || !h.attrs || h.noted == h.from) return;
  h.noted = h.from;
  std::vector<Prefetcher::File> small;
  for (const NodeEntry& e : h.entries) {
    if (!S_ISREG(e.type)) continue;
    try {
      const struct stat st = context.tree.getattr(e.node).st;
      if (st.st_size > 0 && static_cast<uint64_t>(st.st_size) <= Prefetcher::kMaxFileSize)
        small.push_back({e.node, static_cast<uint64_t>(st.st_size)});
    } catch (const std::exception&) {
      // its own lookup reports it
    }
  }
  context.prefetch.listed(ino, h.from, small);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
  checked(req, "readdir", ino, [&] {
    const std::shared_ptr<DirHandle> handle = dir_handle(req, fi->fh);
    std::lock_guard lock(handle->mutex);
    std::vector<char> buf(size);
    size_t used = 0;
    list_from(req, ino, *handle, static_cast<uint64_t>(offset), false, [&](const NodeEntry& e) {
      struct stat st {};
      st.st_ino = e.node;
      st.st_mode = e.type;
      size_t need = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                                      static_cast<off_t>(e.next));
      if (need > size - used) return false;
      used += need;
      return true;
    });
    note_page(context_of(req), ino, *handle);
    count_bytes(req, "readdir", used);
    fuse_reply_buf(req, buf.data(), used);
  });
}

// Like readdir, with each entry's attributes so the kernel needs no lookup
// per name (ls -l, rsync, tar). An entry whose attributes cannot be read is
// still listed, without them (node id 0: the kernel looks it up later).
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
  checked(req, "readdirplus", ino, [&] {
    const std::shared_ptr<DirHandle> handle = dir_handle(req, fi->fh);
    std::lock_guard lock(handle->mutex);
    RestoreTree& tree = tree_of(req);
    std::vector<char> buf(size);
    size_t used = 0;
    list_from(req, ino, *handle, static_cast<uint64_t>(offset), true, [&](const NodeEntry& e) {
      fuse_entry_param entry{};
      entry.attr.st_ino = e.node;
      entry.attr.st_mode = e.type;
      if (e.name != "." && e.name != "..") {
        try {
          entry = entry_of(tree.getattr(e.node));
        } catch (const std::exception& err) {
          log::debug("readdirplus_attr", {{"node", hex(e.node)}, {"error", err.what()}});
        }
      }
      size_t need = fuse_add_direntry_plus(req, buf.data() + used, size - used, e.name.c_str(), &entry,
                                           static_cast<off_t>(e.next));
      if (need > size - used) return false;
      used += need;
      return true;
    });
    note_page(context_of(req), ino, *handle);
    count_bytes(req, "readdirplus", used);
    fuse_reply_buf(req, buf.data(), used);
  });
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  context_of(req).dirs.take(fi->fh);
  fuse_reply_err(req, 0);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  checked(req, "open", ino, [&] {
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) throw Error(EROFS, "read-only tree");
    if (context_of(req).no_open) {  // the read-only mount refuses writing opens before they come here (see op_init)
      fuse_reply_err(req, ENOSYS);
      return;
    }
    auto& files = context_of(req).files;
    RestoreTree& tree = tree_of(req);  // the reply frees req, even when it fails
    std::shared_ptr<OpenFile> file = tree.open(ino);
    AttachedBackupPtr backup = file->backup.lock();
    fi->keep_cache = !(backup && backup->replaced_changed);  // see op_opendir
    fi->fh = files.add(file);
    if (fuse_reply_open(req, fi) != 0) {
      files.take(fi->fh);
      tree.close(*file);
    }
  });
}

// Whether libfuse will splice a reply of these pieces whole: it copies
// one under two pages, and one too big for its pipe (fuse_ops.h: kMaxRead;
// a mount taken over from a run that allowed larger READs sends them)
// through a buffer it allocates per reply, slower than our own read.
//
// libfuse decides per reply, out of sight: a pipe that may not grow
// (pipe-max-size lowered, a user over its pipe pages without
// CAP_SYS_RESOURCE or CAP_SYS_ADMIN) makes it copy every reply of that
// thread that way. A thread whose spliced reply did not reach splice_send
// (session_io.h) therefore goes back to reading itself.
thread_local bool thread_splices = true;
thread_local bool spliced_now = false;  // set by count_spliced during a reply

bool spliceable(const std::vector<Extent>& pieces) {
  if (!thread_splices) return false;
  size_t size = 0;
  for (const Extent& e : pieces) size += e.length;
  return size >= 2 * 4096 &&
         (pieces.size() + 2) * 4096 + sizeof(fuse_out_header) + size <= kSplicePipe;  // libfuse's own reckoning
}

// Replies with bytes of the image files themselves: libfuse splices them
// from each image's descriptor through a pipe into /dev/fuse (replies of
// two pages or more, with FUSE_CAP_SPLICE_WRITE), a copy fewer than reading
// them into a buffer first. The images are checked unchanged before (as a
// read checks them after itself); one changed while its bytes were being
// sent is caught after, and the kernel's pages of the node are dropped
// with it: later reads answer EIO (image_file.h).
void reply_mapped(fuse_req_t req, fuse_ino_t ino, const std::vector<Extent>& extents) {
  std::vector<const ImageFile*> files;
  size_t total = 0, hole = 0;
  for (const Extent& e : extents) {
    total += e.length;
    if (!e.file) {
      hole = std::max<size_t>(hole, e.length);
      continue;
    }
    if (std::find(files.begin(), files.end(), e.file) == files.end()) {
      e.file->check_unchanged();
      files.push_back(e.file);
    }
    if (e.offset > e.file->size() || e.length > e.file->size() - e.offset)
      throw Error(EIO, "a file's map reaches past the end of " + e.file->display());
  }
  thread_local std::vector<char> zeros;  // never written: holes read from here
  if (zeros.size() < hole) zeros.resize(hole);  // before any piece points into it
  std::unique_ptr<fuse_bufvec, decltype(&std::free)> bv(
      static_cast<fuse_bufvec*>(std::calloc(1, sizeof(fuse_bufvec) + (extents.size() - 1) * sizeof(fuse_buf))),
      &std::free);
  if (!bv) throw std::bad_alloc();
  bv->count = extents.size();
  for (size_t i = 0; i < extents.size(); ++i) {
    const Extent& e = extents[i];
    fuse_buf& b = bv->buf[i];
    b.size = e.length;
    if (e.file) {
      b.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY);
      b.fd = e.file->fd();
      b.pos = static_cast<off_t>(e.offset);
    } else {
      b.mem = zeros.data();
    }
  }
  FuseContext& context = context_of(req);
  count_bytes(req, "read", total);
  spliced_now = false;
  fuse_reply_data(req, bv.get(), static_cast<fuse_buf_copy_flags>(0));
  if (!spliced_now) {
    thread_splices = false;
    log::info("splice_off", {{"reason", "libfuse copied a reply it could have spliced (its pipe could not grow)"},
                             {"effect", "this FUSE thread reads into a buffer from now on"}});
  }
  for (const ImageFile* f : files)
    if (f->check_changed() && context.session) fuse_lowlevel_notify_inval_inode(context.session, ino, 0, 0);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi) {
  checked(req, "read", ino, [&] {
    thread_local std::vector<std::byte> buf;
    if (buf.size() < size) buf.resize(size);
    FuseContext& context = context_of(req);
    const std::span<std::byte> into(buf.data(), size);
    size_t n = 0;
    if (fi->fh == 0) {  // no OPEN was sent (node_files.h)
      if (auto ahead = context.prefetch.read_from_window(ino, static_cast<uint64_t>(offset), into)) {
        n = *ahead;
      } else if (auto mapped = context.node_files.map_read(ino, static_cast<uint64_t>(offset), size);
                 mapped && spliceable(mapped->extents)) {
        if (offset == 0) context.prefetch.read_started(ino);
        reply_mapped(req, ino, mapped->extents);
        return;
      } else {
        n = context.node_files.read(ino, static_cast<uint64_t>(offset), into);
      }
      if (offset == 0) context.prefetch.read_started(ino);
    } else {
      std::shared_ptr<OpenFile> file = context.files.find(fi->fh);
      // Opened by a previous run of the daemon: taken over (restore_tree.h).
      if (!file) file = context.files.adopt(fi->fh, std::make_shared<OpenFile>(ino));
      n = context.tree.read(*file, static_cast<uint64_t>(offset), into);
    }
    count_bytes(req, "read", n);
    fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), n);
  });
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  checked(req, "release", ino, [&] {
    if (auto file = context_of(req).files.take(fi->fh)) tree_of(req).close(*file);
    fuse_reply_err(req, 0);
  });
}


void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  checked(req, "statfs", ino, [&] {
    FsStat s = tree_of(req).statfs(ino);
    struct statvfs v {};
    v.f_bsize = v.f_frsize = s.block_size ? s.block_size : 4096;
    v.f_blocks = s.blocks;
    v.f_bfree = v.f_bavail = s.blocks_free;
    v.f_files = s.files;
    v.f_ffree = v.f_favail = s.files_free;
    v.f_namemax = s.name_max;
    v.f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
    fuse_reply_statfs(req, &v);
  });
}

void reply_xattr_value(fuse_req_t req, const std::string& value, size_t size, std::string_view op) {
  if (size == 0) fuse_reply_xattr(req, value.size());
  else if (size < value.size()) fuse_reply_err(req, ERANGE);
  else {
    count_bytes(req, op, value.size());
    fuse_reply_buf(req, value.data(), value.size());
  }
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  checked(req, "getxattr", ino, [&] {
    auto value = tree_of(req).getxattr(ino, name);
    if (!value) {
      fuse_reply_err(req, ENODATA);
      return;
    }
    reply_xattr_value(req, *value, size, "getxattr");
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  checked(req, "listxattr", ino, [&] {
    std::string names;
    for (const auto& n : tree_of(req).listxattr(ino)) {
      names += n;
      names.push_back('\0');
    }
    reply_xattr_value(req, names, size, "listxattr");
  });
}

void op_access(fuse_req_t req, fuse_ino_t, int mask) { fuse_reply_err(req, (mask & W_OK) ? EROFS : 0); }

// Everything that would write answers EROFS.
void rofs(fuse_req_t req) {
  if (Metrics* m = context_of(req).metrics) m->fuse_request("write_refused");
  fuse_reply_err(req, EROFS);
}
void op_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) { rofs(req); }
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { rofs(req); }
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { rofs(req); }
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) { rofs(req); }
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { rofs(req); }
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) { rofs(req); }
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { rofs(req); }
void op_write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) { rofs(req); }
void op_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) { rofs(req); }
void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) { rofs(req); }
void op_fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) { rofs(req); }
void op_copy_file_range(fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t, off_t, fuse_file_info*,
                        size_t, int) {
  rofs(req);
}

}  // namespace

SessionIo& io_of(void* userdata) { return *static_cast<FuseContext*>(userdata)->io; }

void count_spliced(void* userdata, size_t bytes) {
  spliced_now = true;
  if (Metrics* m = static_cast<FuseContext*>(userdata)->metrics) m->fuse_bytes("read_spliced", bytes);
}

fuse_lowlevel_ops make_fuse_operations() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.readlink = op_readlink;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.open = op_open;
  ops.read = op_read;
  ops.release = op_release;
  // No flush or fsync: nothing is ever dirty, and without them the kernel
  // stops sending a FLUSH round trip on every close.
  ops.statfs = op_statfs;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.access = op_access;
  ops.setattr = op_setattr;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.unlink = op_unlink;
  ops.rmdir = op_unlink;
  ops.symlink = op_symlink;
  ops.rename = op_rename;
  ops.link = op_link;
  ops.write = op_write;
  ops.setxattr = op_setxattr;
  ops.removexattr = op_unlink;
  ops.create = op_create;
  ops.fallocate = op_fallocate;
  ops.copy_file_range = op_copy_file_range;
  return ops;
}

}  // namespace sendense
