#include "fuse/worker_client.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>

#include "readers/common/error.h"
#include "readers/common/handle_table.h"
#include "readers/common/log.h"
#include "readers/common/shared_lru.h"
#include "worker/replies.h"

namespace sendense {

using worker::Header;
using worker::Op;

struct Worker::Pending {
  uint64_t id = 0;
  Op op = Op::getattr;
  std::chrono::steady_clock::time_point started;
  std::span<std::byte> into;  // a read's destination
  std::condition_variable cv;
  bool done = false;
  int err = 0;
  std::string message;
  std::vector<std::byte> payload;
  size_t read_n = 0;
};

namespace {

constexpr int kSocketBuffer = 16 * 1024 * 1024;
// The most one reply may hold: a read (at most one 8 MiB part) or a page of
// a folder (kMaxPageEntries long names with attributes, under 2 MiB); a
// worker sending more is treated as failed, not buffered: a hostile image
// cannot make the daemon, which serves every backup, hold a big listing.
constexpr size_t kMaxReply = 16u * 1024 * 1024;

// Namespaces we ask for, most first; the host may refuse some (containers).
constexpr uint64_t kAllNamespaces = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;

// A worker's uid/gid must be nobody's: a worker running as a real user
// could read that user's files through any descriptor it is ever given,
// and that user could signal or trace it.
void check_unowned_id(uint32_t id, const std::string& backup_id) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found_user = nullptr;
  group gr{};
  group* found_group = nullptr;
  if (::getpwuid_r(id, &pw, buf.data(), buf.size(), &found_user) == 0 && found_user)
    throw Error(EPERM, "worker uid " + std::to_string(id) + " belongs to user " + found_user->pw_name +
                           "; refusing to run a backup's parsers as it", backup_id);
  if (::getgrgid_r(id, &gr, buf.data(), buf.size(), &found_group) == 0 && found_group)
    throw Error(EPERM, "worker gid " + std::to_string(id) + " belongs to group " + found_group->gr_name +
                           "; refusing to run a backup's parsers as it", backup_id);
}

std::string describe_status(int st) {
  if (WIFSIGNALED(st)) return "signal=" + std::to_string(WTERMSIG(st));
  if (WIFEXITED(st)) return "exit=" + std::to_string(WEXITSTATUS(st));
  return "status=" + std::to_string(st);
}

std::vector<uint64_t> sizes_of(const std::vector<ImageFilePtr>& images) {
  std::vector<uint64_t> sizes;
  for (const auto& image : images) sizes.push_back(image->size());
  return sizes;
}

// Attributes are immutable (so is the image): those a listing or a lookup
// brought are kept, so the per-entry getattr of readdirplus, ls -l or a
// walk costs no request. So is a small file's map (worker/protocol.h): the
// file's reads then go to the image files here, with no request. And the
// names of a folder's first page with attributes (what opendir fetches):
// a lookup of one of them, which a walk makes for every entry the kernel
// listed without attributes, costs no request either.
class WorkerFilesystem final : public Filesystem {
  struct Known {
    Attr attr;
    std::vector<worker::MappedExtent> map;  // empty: reads go to the worker
    bool asked = false;                     // a larger file's map was asked for (kMap)
    // The folder whose first page brought it (0: none, or its page's
    // xattr names were asked for already), and its xattr names once known.
    uint64_t folder = 0;
    std::shared_ptr<const std::vector<std::string>> xattrs;
  };
  using Names = std::unordered_map<std::string, uint64_t>;  // shown name -> inode

 public:
  WorkerFilesystem(std::shared_ptr<Worker> worker, uint32_t index)
      : worker_(std::move(worker)), index_(index), volume_(worker_->hello().volumes.at(index)),
        image_sizes_(sizes_of(worker_->images())), attrs_(worker::kListingAttrsMax, worker::kListingAttrsMax),
        names_(kNamedFolders, worker::kListingAttrsMax) {}

  uint64_t root_ino() const override { return volume_.root_ino; }
  std::string type_name() const override { return volume_.fs_type; }
  JournalReport journal() const override { return volume_.journal; }

  Attr getattr(uint64_t ino) override {
    if (auto known = attrs_.find(ino)) return known->attr;
    auto out = call(Op::getattr, [&](worker::Writer& w) { w.u64(ino); });
    worker::Reader r(out);
    return keep(worker::get_checked_attr_map(r, image_sizes_), ino);
  }
  std::optional<Attr> lookup(uint64_t dir, std::string_view name) override {
    // A page's names are the names the tree shows, each unique in its
    // folder (names.h), and the worker's lookup finds each one's entry.
    if (auto names = names_.find(dir)) {
      if (auto it = names->find(std::string(name)); it != names->end())
        if (auto known = attrs_.find(it->second)) return known->attr;
    }
    auto out = call(Op::lookup, [&](worker::Writer& w) {
      w.u64(dir);
      w.str(name);
    });
    worker::Reader r(out);
    if (r.u32() == 0) return std::nullopt;
    auto am = worker::get_checked_attr_map(r, image_sizes_);
    const uint64_t ino = am.attr.ino;
    return keep(std::move(am), ino);
  }
  std::vector<DirEntry> readdir(uint64_t dir) override {
    return readdir_page(dir, 0, std::numeric_limits<size_t>::max(), false);
  }
  // A page bigger than one reply may hold comes in several requests, so
  // that a short page still means the end (filesystem.h).
  std::vector<DirEntry> readdir_page(uint64_t dir, uint64_t cookie, size_t max, bool attrs_next) override {
    std::vector<DirEntry> out;
    while (out.size() < max) {
      const size_t want = std::min(max - out.size(), worker::kMaxPageEntries);
      auto part = page_request(dir, cookie, want, attrs_next);
      const bool last = part.size() < want;
      if (!part.empty()) cookie = part.back().next;
      if (out.empty()) out = std::move(part);
      else std::move(part.begin(), part.end(), std::back_inserter(out));
      if (last) break;
    }
    return out;
  }
  std::string readlink(uint64_t ino) override {
    auto out = call(Op::readlink, [&](worker::Writer& w) { w.u64(ino); });
    worker::Reader r(out);
    return r.str();
  }
  // No request: the worker opens the inode on the handle's first read.
  uint64_t open(uint64_t ino) override { return files_.add(std::make_shared<const uint64_t>(ino)); }
  size_t read(uint64_t handle, uint64_t offset, std::span<std::byte> buf) override {
    const auto [ino, known] = file_of(handle);
    if (known && !known->map.empty()) return read_mapped(*known, offset, buf);
    size_t done = 0;
    while (done < buf.size()) {
      const size_t want = std::min(buf.size() - done, worker_->max_read());
      size_t n;
      try {
        n = worker_->read(index_, handle, ino, offset + done, buf.subspan(done, want));
      } catch (const Error& e) {
        if (e.code() == EIO) worker_->check_images();
        throw;
      }
      done += n;
      if (n < want) break;  // end of file
    }
    return done;
  }
  std::optional<std::vector<Extent>> map_read(uint64_t handle, uint64_t offset, size_t size) override {
    const auto [ino, known] = file_of(handle);
    if (!known || known->map.empty()) return std::nullopt;
    auto pieces = slice(*known, offset, size);
    if (pieces.size() > kMaxReadExtents) return std::nullopt;
    return pieces;
  }
  // Releases go in batches (a walk closes a file per file): until then the
  // worker keeps at most kReleaseBatch files open that nobody reads.
  void release(uint64_t handle) override {
    if (!files_.take(handle)) return;
    std::vector<uint64_t> batch;
    {
      std::lock_guard lock(released_mutex_);
      released_.push_back(handle);
      if (released_.size() < worker::kReleaseBatch) return;
      batch.swap(released_);
    }
    worker::Writer w;
    w.u32(static_cast<uint32_t>(batch.size()));
    for (uint64_t h : batch) w.u64(h);
    worker_->post(Op::release, index_, w.buf);
  }
  // Mapped files from the daemon's own descriptors; the others (compressed
  // clusters, inline data) in one request per kReadFilesMax files.
  std::vector<std::vector<std::byte>> read_files(std::span<const WholeFile> files) override {
    std::vector<std::vector<std::byte>> out(files.size());
    std::vector<size_t> asked;  // indexes into files
    uint64_t asked_bytes = 0;
    auto ask = [&] {
      if (asked.empty()) return;
      try {
        auto reply = call(Op::read_files, [&](worker::Writer& w) {
          w.u32(static_cast<uint32_t>(asked.size()));
          for (size_t i : asked) {
            w.u64(files[i].ino);
            w.u64(files[i].size);
          }
        });
        std::vector<uint64_t> sizes;
        for (size_t i : asked) sizes.push_back(files[i].size);
        auto got = worker::decode_read_files(reply, sizes);
        for (size_t k = 0; k < asked.size(); ++k)
          if (got[k]) out[asked[k]] = std::move(*got[k]);
      } catch (const std::exception& e) {
        // A worker that answers wrong or fails: nothing of this batch is
        // kept (its files' READs get the worker's answer on their own).
        for (size_t i : asked) out[i].clear();
        log::debug("read_files_failed", {{"backup", worker_->backup_id()}, {"error", e.what()}});
      }
      asked.clear();
      asked_bytes = 0;
    };
    // The mapped files' bytes are asked of the disk at once (the reads
    // below then wait for them together, not one file after another).
    std::vector<std::shared_ptr<const Known>> known(files.size());
    for (size_t i = 0; i < files.size(); ++i) {
      known[i] = attrs_.find(files[i].ino);
      if (!known[i]) continue;
      for (const auto& e : known[i]->map)
        if (e.file != worker::kZeros)
          ::posix_fadvise(worker_->images()[e.file]->fd(), static_cast<off_t>(e.offset), static_cast<off_t>(e.length),
                          POSIX_FADV_WILLNEED);
    }
    for (size_t i = 0; i < files.size(); ++i) {
      const WholeFile& f = files[i];
      if (f.size == 0 || f.size > worker::kReadFilesMaxSize) continue;
      if (known[i] && !known[i]->map.empty()) {
        if (known[i]->attr.size < f.size) continue;
        std::vector<std::byte> data(f.size);
        try {
          if (read_mapped(*known[i], 0, data) == data.size()) out[i] = std::move(data);
        } catch (const std::exception&) {
          // its READ reports it
        }
        continue;
      }
      if (asked.size() == worker::kReadFilesMax || asked_bytes + f.size > worker::kReadFilesMaxBytes) ask();
      asked.push_back(i);
      asked_bytes += f.size;
    }
    ask();
    return out;
  }
  std::vector<std::string> listxattr(uint64_t ino) override {
    if (auto names = known_xattrs(ino)) return *names;
    auto out = call(Op::listxattr, [&](worker::Writer& w) { w.u64(ino); });
    worker::Reader r(out);
    return worker::get_xattr_names(r);
  }
  // `ls -l` asks every entry for its POSIX ACLs (two getxattr each): a
  // name its listxattr would show but does not is answered here.
  std::optional<std::string> getxattr(uint64_t ino, std::string_view name) override {
    // (Other names, NTFS's system.ntfs_*, are found only by asking.)
    if (listed_xattr_name(name))
      if (auto names = known_xattrs(ino); names && std::find(names->begin(), names->end(), name) == names->end())
        return std::nullopt;
    auto out = call(Op::getxattr, [&](worker::Writer& w) {
      w.u64(ino);
      w.str(name);
    });
    worker::Reader r(out);
    if (r.u32() == 0) return std::nullopt;
    return r.str();
  }
  FsStat statfs() override {
    auto out = call(Op::statfs, [](worker::Writer&) {});
    worker::Reader r(out);
    FsStat s;
    s.block_size = r.u64();
    s.blocks = r.u64();
    s.blocks_free = r.u64();
    s.files = r.u64();
    s.files_free = r.u64();
    s.name_max = r.u64();
    return s;
  }

 private:
  // One kReaddir request: at most `max` (<= kMaxPageEntries) entries.
  std::vector<DirEntry> page_request(uint64_t dir, uint64_t cookie, size_t max, bool attrs_next) {
    auto out = call(Op::readdir, [&](worker::Writer& w) {
      w.u64(dir);
      w.u64(cookie);
      w.u64(max);
      w.u32(attrs_next ? 1 : 0);
    });
    auto page = worker::decode_page(out, cookie, max, image_sizes_);
    std::vector<DirEntry> entries;
    entries.reserve(page.size());
    auto names = attrs_next && cookie == 0 ? std::make_shared<Names>() : nullptr;
    for (auto& p : page) {
      const DirEntry& e = entries.emplace_back(std::move(p.entry));
      if (p.attr) {
        keep(std::move(*p.attr), e.ino, names ? dir : 0);
        if (names && e.name != "." && e.name != "..") names->emplace(e.name, e.ino);
      }
    }
    if (names && !names->empty()) {
      const size_t weight = names->size();
      names_.insert(dir, std::move(names), weight);
    }
    return entries;
  }
  template <typename F>
  std::vector<std::byte> call(Op op, F&& args) {
    worker::Writer w;
    args(w);
    try {
      return worker_->call(op, index_, w.buf);
    } catch (const Error& e) {
      if (e.code() == EIO) worker_->check_images();
      throw;
    }
  }

  // Keeps the attributes the worker gave for `ino` (those it names another
  // inode in are not kept: the cache is keyed by the inode asked for), with
  // the file's map once checked.
  Attr keep(worker::AttrMap am, uint64_t ino, uint64_t folder = 0) {
    if (am.attr.ino == ino && ino != 0)
      attrs_.insert(ino, std::make_shared<const Known>(Known{am.attr, std::move(am.map), false, folder, nullptr}), 1);
    return am.attr;
  }

  // Replaces what is known of an inode (insert() keeps a value already there).
  std::shared_ptr<const Known> replace(uint64_t ino, Known k) {
    auto known = std::make_shared<const Known>(std::move(k));
    attrs_.erase(ino);
    attrs_.insert(ino, known, 1);
    return known;
  }

  // The xattr names of `ino`, if known or if it came with a folder's first
  // page: then one request asks for those of every entry of that page.
  std::shared_ptr<const std::vector<std::string>> known_xattrs(uint64_t ino) {
    auto known = attrs_.find(ino);
    if (!known) return nullptr;
    if (known->xattrs || known->folder == 0) return known->xattrs;
    ask_xattr_names(known->folder);
    known = attrs_.find(ino);
    return known ? known->xattrs : nullptr;
  }

  // One request for the xattr names of `folder`'s first page's entries.
  // Each is asked once: an entry the worker could not list is then asked
  // on its own, as one that came without a page is.
  void ask_xattr_names(uint64_t folder) {
    auto names = names_.find(folder);
    std::vector<std::pair<uint64_t, std::shared_ptr<const Known>>> asked;
    if (names)
      for (const auto& [name, ino] : *names)
        if (auto k = attrs_.find(ino); k && k->folder == folder && !k->xattrs && asked.size() < worker::kMaxXattrBatch)
          asked.emplace_back(ino, std::move(k));
    if (asked.empty()) return;
    auto out = call(Op::xattr_names, [&](worker::Writer& w) {
      w.u32(static_cast<uint32_t>(asked.size()));
      for (const auto& [ino, k] : asked) w.u64(ino);
    });
    worker::Reader r(out);
    if (r.u32() != asked.size()) throw Error(EIO, "worker protocol: xattr_names answered for another count");
    for (auto& [ino, k] : asked) {
      Known updated = *k;
      updated.folder = 0;
      if (r.u32() != 0) updated.xattrs = std::make_shared<std::vector<std::string>>(worker::get_xattr_names(r));
      replace(ino, std::move(updated));
    }
  }

  // A larger file's map, asked for once by its first read; kept with its
  // attributes (an empty map too: the worker reads that file).
  std::shared_ptr<const Known> ask_map(const Known& k) {
    auto out = call(Op::map, [&](worker::Writer& w) { w.u64(k.attr.ino); });
    worker::Reader r(out);
    auto map = worker::get_map(r);
    if (!map.empty()) worker::check_map(k.attr, map, image_sizes_, worker::kMapMaxExtentsAsked, UINT64_MAX);
    Known updated = k;
    updated.map = std::move(map);
    updated.asked = true;
    return replace(k.attr.ino, std::move(updated));
  }

  // The inode open under `handle`, and what is known of it: a larger
  // file's map is asked for once, by its first read.
  std::pair<uint64_t, std::shared_ptr<const Known>> file_of(uint64_t handle) {
    const auto ino = files_.find(handle);
    if (!ino) throw Error(EBADF, "no open file " + std::to_string(handle));
    auto known = attrs_.find(*ino);
    if (known && known->map.empty() && !known->asked && S_ISREG(known->attr.mode) &&
        known->attr.size > worker::kMapMaxSize)
      known = ask_map(*known);
    return {*ino, std::move(known)};
  }

  // Where a mapped file's bytes [offset, offset + size) lie (clipped at its
  // end), in the daemon's own image files. A failed worker fails its
  // backup's every read, as those through it fail.
  std::vector<Extent> slice(const Known& k, uint64_t offset, size_t size) const {
    if (worker_->failed()) throw Error(EIO, "worker for backup " + worker_->backup_id() + " failed (" + worker_->failure() + ")");
    std::vector<Extent> out;
    if (offset >= k.attr.size) return out;
    const uint64_t end = offset + std::min<uint64_t>(size, k.attr.size - offset);
    uint64_t start = 0;  // of the extent in the file
    for (const auto& e : k.map) {
      if (start >= end) break;
      if (offset < start + e.length) {
        const uint64_t from = std::max(offset, start);
        const uint64_t n = std::min(end, start + e.length) - from;
        if (e.file == worker::kZeros) append_extent(out, nullptr, 0, n);
        else append_extent(out, worker_->images()[e.file].get(), e.offset + (from - start), n);
      }
      start += e.length;
    }
    return out;
  }

  // A read of a mapped file: from the daemon's own descriptors.
  size_t read_mapped(const Known& k, uint64_t offset, std::span<std::byte> buf) {
    size_t done = 0;
    for (const Extent& e : slice(k, offset, buf.size())) {
      if (!e.file) {
        std::memset(buf.data() + done, 0, e.length);
      } else {
        try {
          e.file->read_exact(buf.data() + done, e.length, e.offset, "file data");
        } catch (const Error& err) {
          throw Error(err.code(), err.what(), "inode " + std::to_string(k.attr.ino) + " of " + volume_.name);
        }
      }
      done += e.length;
    }
    return done;
  }

  std::shared_ptr<Worker> worker_;
  uint32_t index_;
  worker::HelloVolume volume_;
  const std::vector<uint64_t> image_sizes_;  // of the daemon's descriptors, which maps must stay inside
  ext::SharedLru<Known> attrs_;
  // Bounded by names (kListingAttrsMax) more than by folders: a walk goes
  // through the subfolders of a large folder one by one, and between two
  // of its lookups (the entries the kernel listed without attributes) it
  // lists a subfolder's whole subtree; at 256 folders the large one was
  // gone halfway, and each lookup after that was a request.
  static constexpr size_t kNamedFolders = 8192;
  ext::SharedLru<Names> names_;  // by folder
  // Open files: the handle number (sent with each read) -> the inode.
  HandleTable<const uint64_t> files_;
  std::mutex released_mutex_;
  std::vector<uint64_t> released_;  // released, not yet told
};

}  // namespace

std::string find_worker_binary() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = self.parent_path() / "sendense-restore-worker";
    if (::access(beside.c_str(), X_OK) == 0) return beside.string();
  }
  return SENDENSE_WORKER_PATH;
}

Worker::Worker(std::string backup_id, WorkerOptions options)
    : backup_id_(std::move(backup_id)), options_(std::move(options)) {}

std::shared_ptr<Worker> Worker::start(const std::string& backup_id, int64_t num, const std::vector<DiskSpec>& disks,
                                      const FsOpenOptions& fs_open, const WorkerOptions& options) {
  // The chain is validated and opened here, by the daemon, with the rules
  // of an in-process attach (open_disks: confined to the image's folder).
  worker::Setup setup;
  setup.backup_id = backup_id;
  setup.fs_open = fs_open;
  std::vector<ImageFilePtr> images;
  for (const DiskSpec& d : disks) {
    const std::string path = std::filesystem::absolute(d.image_path).string();
    const std::string folder = std::filesystem::path(path).parent_path().string();
    ValidatedImage v;
    try {
      v = validate_image(path, d.format, folder);
    } catch (const Error& e) {
      if (std::string(e.what()).find(d.image_path) == std::string::npos) rethrow_with_context(e, d.image_path);
      throw;
    }
    if (v.reader == "qemu-nbd") return nullptr;
    setup.disks.emplace_back(path, static_cast<uint32_t>(d.format));
    for (auto& [from, to] : v.folders) setup.canonical.emplace_back(from, to);
    for (auto& f : v.files) {
      setup.canonical.emplace_back(f.requested, f.canonical);
      setup.files.push_back({f.canonical, worker::kFirstImageFd + static_cast<int>(images.size())});
      images.push_back(f.file);
    }
  }

  if (::geteuid() == 0) {
    const uint64_t id = options.id_base + static_cast<uint64_t>(num);
    if (num < 0 || id >= 0xfffffffeull) throw Error(EINVAL, "no worker id for backup #" + std::to_string(num), backup_id);
    setup.uid = setup.gid = static_cast<uint32_t>(id);  // checked below
  }
  std::shared_ptr<Worker> w(new Worker(backup_id, options));
  w->images_ = std::move(images);
  if (w->options_.binary.empty()) w->options_.binary = find_worker_binary();
  std::vector<int> fds;
  for (const auto& f : w->images_) fds.push_back(f->fd());
  std::optional<StartedWorker> spare;
  if (options.spares && fds.size() <= worker::kMaxSpareFiles && backup_id.size() <= worker::kSpareRoom)
    spare = options.spares->take();
  if (spare) w->adopt(std::move(*spare));
  else w->spawn(fds);
  setup.memory_limit = options.memory_limit;
  setup.threads = options.threads;
  setup.namespaces = w->namespaces_;

  Pending p;
  p.id = 0;
  p.op = Op::setup;
  p.started = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(w->mutex_);
    w->pending_[0] = &p;
  }
  const std::vector<std::byte> body = worker::encode(setup);
  Header h{0, static_cast<uint32_t>(Op::setup), 0};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<std::byte*>(body.data()), body.size()}};
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  // A spare has no image yet: they come with its setup.
  std::vector<char> control;
  if (spare && !fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    m.msg_control = control.data();
    m.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  if (::sendmsg(w->sock_.get(), &m, MSG_NOSIGNAL) < 0) {
    const Error e = sys_error("cannot send the setup to the worker", backup_id);
    std::lock_guard lock(w->mutex_);
    w->pending_.erase(0);
    throw e;
  }
  // The id is checked while the worker sets itself up: about a
  // millisecond of NSS (the files, then systemd's userdb over a socket),
  // off the attach's path. The worker may run under the id by then, inside
  // its sandbox; a failed check kills it before anything it says is used.
  if (setup.uid != 0) {
    try {
      check_unowned_id(setup.uid, backup_id);
    } catch (...) {
      std::lock_guard lock(w->mutex_);
      w->pending_.erase(0);
      throw;
    }
  }
  const std::vector<std::byte> hello = w->wait(p);
  w->hello_ = worker::decode_checked_hello(hello, backup_id);
  {
    std::lock_guard lock(w->mutex_);
    w->serving_ = true;
  }
  log::debug("worker_started", {{"backup", backup_id}, {"pid", std::to_string(w->pid_)},
                                {"namespaces", std::to_string(w->namespaces_)}, {"spare", spare ? "yes" : "no"}});
  return w;
}

namespace {

// Clones the worker into new namespaces (as many as the host allows) and
// execs `args` (binary first) with the socket as kControlFd and `fds` as
// kFirstImageFd... The child gets no other descriptor, no_new_privs, and
// limits on descriptors (`nofile`), core dumps and CPU time.
StartedWorker start_process(const WorkerOptions& options, std::vector<std::string> args, const std::vector<int>& fds,
                            rlim_t nofile_limit, const std::string& label) {
  StartedWorker out;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw sys_error("socketpair", label);
  out.sock.reset(sv[0]);
  UniqueFd child_end(sv[1]);
  // A 1 MiB read must fit one datagram: raise both buffers (root may force
  // past net.core.wmem_max; otherwise reads are cut smaller).
  for (int fd : {sv[0], sv[1]})
    for (auto [force, plain] : {std::pair{SO_SNDBUFFORCE, SO_SNDBUF}, std::pair{SO_RCVBUFFORCE, SO_RCVBUF}})
      if (::setsockopt(fd, SOL_SOCKET, force, &kSocketBuffer, sizeof kSocketBuffer) != 0)
        ::setsockopt(fd, SOL_SOCKET, plain, &kSocketBuffer, sizeof kSocketBuffer);
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  if (::getsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0) out.max_read = worker::max_part_for(sndbuf);

  // Everything the child needs is made before the fork: between fork and
  // exec only system calls (async-signal-safe).
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;  // (the worker limits its own malloc arenas: worker/sandbox.cpp)
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS"})
    if (const char* v = std::getenv(name)) {
      std::string s = std::string(name) + "=" + v;
      // LeakSanitizer stops the world with ptrace at exit: the filter kills that.
      if (std::string_view(name) == "ASAN_OPTIONS") s += ":detect_leaks=0";
      env_strings.push_back(std::move(s));
    }
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  UniqueFd devnull;
  if (options.quiet) {
    devnull.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    if (!devnull) throw sys_error("/dev/null", label);
  }
  const int quiet_fd = devnull ? devnull.get() : -1;
  std::vector<int> sources = {child_end.get()};
  sources.insert(sources.end(), fds.begin(), fds.end());
  const int high = worker::kControlFd + static_cast<int>(sources.size());  // first descriptor past the targets
  const rlimit nofile{nofile_limit, nofile_limit};
  const rlimit no_core{0, 0};
  // CPU seconds over the worker's life: a backup read for hours uses many;
  // a spin in one request is the watchdog's to catch.
  const rlimit cpu{6 * 3600, 6 * 3600};
  const uint64_t no_signals = 0;  // the kernel's sigset_t: the daemon's threads block stop signals

  auto child = [&]() -> void {
    // First: the descriptor shuffle below may reuse quiet_fd's number.
    if (quiet_fd >= 0) ::syscall(SYS_dup2, quiet_fd, 2);
    for (size_t i = 0; i < sources.size(); ++i) {
      const long tmp = ::syscall(SYS_fcntl, sources[i], F_DUPFD, high + static_cast<int>(i));
      if (tmp < 0) ::syscall(SYS_exit_group, 126);
      sources[i] = static_cast<int>(tmp);
    }
    for (size_t i = 0; i < sources.size(); ++i)
      if (::syscall(SYS_dup2, sources[i], worker::kControlFd + static_cast<int>(i)) < 0) ::syscall(SYS_exit_group, 126);
    ::syscall(SYS_close_range, high, ~0u, 0);
    ::syscall(SYS_setsid);
    ::syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    ::syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &nofile, nullptr);
    ::syscall(SYS_prlimit64, 0, RLIMIT_CORE, &no_core, nullptr);
    ::syscall(SYS_prlimit64, 0, RLIMIT_CPU, &cpu, nullptr);
    ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &no_signals, nullptr, sizeof no_signals);
    ::syscall(SYS_execve, argv[0], argv.data(), envp.data());
    ::syscall(SYS_exit_group, 127);
  };

  long pid = -1;
  for (uint64_t flags : {kAllNamespaces, kAllNamespaces & ~static_cast<uint64_t>(CLONE_NEWPID), uint64_t{0}}) {
    // clone(2) as fork(2) (no new stack): the child runs child() and execs.
    pid = ::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, 0);
    if (pid == 0) {
      child();
    }
    if (pid > 0) {
      out.namespaces = flags;
      break;
    }
    if (errno != EPERM && errno != EINVAL && errno != ENOSPC && errno != EUSERS) break;
  }
  if (pid < 0) throw sys_error("cannot start the worker", label);
  out.pid = static_cast<pid_t>(pid);
  static std::atomic<bool> told{false};
  if (out.namespaces != kAllNamespaces && !told.exchange(true))
    log::warn("worker_namespaces", {{"asked", std::to_string(kAllNamespaces)}, {"got", std::to_string(out.namespaces)},
                                    {"reason", "the host refused new namespaces"}});
  return out;
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

void Worker::spawn(const std::vector<int>& fds) {
  adopt(start_process(options_, {options_.binary, backup_id_}, fds,
                      static_cast<rlim_t>(worker::descriptor_limit(fds.size())), backup_id_));
}

void Worker::adopt(StartedWorker started) {
  sock_ = std::move(started.sock);
  pid_ = started.pid;
  max_read_ = started.max_read;
  namespaces_ = started.namespaces;
  watchdog_ = std::thread([this] { watchdog_loop(); });
}

SpareWorkers::SpareWorkers(WorkerOptions options) : options_(std::move(options)) {
  if (options_.binary.empty()) options_.binary = find_worker_binary();
  maker_ = std::thread([this] { make_loop(); });
}

SpareWorkers::~SpareWorkers() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  maker_.join();
  if (spare_) kill_and_reap(spare_->pid);
}

std::optional<StartedWorker> SpareWorkers::take() {
  std::optional<StartedWorker> out;
  {
    std::lock_guard lock(mutex_);
    out.swap(spare_);
  }
  cv_.notify_all();
  if (out && ::waitpid(out->pid, nullptr, WNOHANG) != 0) return std::nullopt;  // it ended meanwhile: reaped
  return out;
}

bool SpareWorkers::ready() const {
  std::lock_guard lock(mutex_);
  return spare_.has_value();
}

void SpareWorkers::make_loop() {
  std::unique_lock lock(mutex_);
  int failures = 0;  // in a row
  auto pause = kRefillDelay;
  while (!stopping_) {
    if (spare_) {
      // A spare that ends while it waits (killed by hand) is reaped and replaced.
      if (!cv_.wait_for(lock, std::chrono::seconds(5), [&] { return stopping_ || !spare_; }) &&
          ::waitpid(spare_->pid, nullptr, WNOHANG) != 0)
        spare_.reset();
      continue;
    }
    // After a take: the attach that took it is listing now; the new
    // spare's exec waits so as not to compete with it for the CPU.
    if (cv_.wait_for(lock, pause, [&] { return stopping_; })) break;
    lock.unlock();
    std::optional<StartedWorker> made;
    std::string why;
    try {
      std::string pad(worker::kSpareRoom, ' ');
      StartedWorker w = start_process(options_, {options_.binary, worker::kSpareFlag, pad}, {},
                                      static_cast<rlim_t>(3 * worker::kMaxSpareFiles + 64), "spare worker");
      // Ready means exec'd and linked: a binary that cannot start is found
      // here, not by the attach that would take it.
      // (In slices, so that a daemon stopping meanwhile does not wait.)
      pollfd p{w.sock.get(), POLLIN, 0};
      int polled = 0;
      for (int slice = 0; slice < 100 && polled == 0; ++slice) {
        polled = ::poll(&p, 1, 100);
        if (polled < 0 && errno == EINTR) polled = 0;
        std::lock_guard stop_lock(mutex_);
        if (stopping_) break;
      }
      Header h{};
      if (polled == 1 && ::recv(w.sock.get(), &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h) && h.id == 0 &&
          h.a == 0) {
        made = std::move(w);
      } else {
        why = polled == 1 ? "it ended before it was ready (it cannot start, or the kernel refuses PR_SET_MM_MAP)"
                          : "it did not say it was ready within 10 s";
        kill_and_reap(w.pid);
      }
    } catch (const Error& e) {
      why = e.what();
    }
    lock.lock();
    if (made) {
      log::debug("spare_worker_ready", {{"pid", std::to_string(made->pid)}});
      spare_ = std::move(made);
      failures = 0;
      pause = kRefillDelay;
    } else if (!stopping_ && ++failures < 3) {
      // (One killed while it started, say.)
      log::warn("spare_worker_failed", {{"reason", why}});
      pause = std::chrono::seconds(1);
    } else if (!stopping_) {
      // Workers are then started by each attach, as without spares.
      log::warn("spare_workers_off", {{"reason", why}});
      break;
    }
  }
}

Worker::~Worker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (pid_ > 0 && !exited_) ::kill(pid_, SIGKILL);  // nothing in it to keep
  }
  watchdog_cv_.notify_all();
  if (sock_) ::shutdown(sock_.get(), SHUT_RDWR);
  if (watchdog_.joinable()) watchdog_.join();
  // No caller is left (they hold the worker), so nobody receives: reap here.
  std::unique_lock lock(mutex_);
  if (pid_ > 0) ended_locked(lock);
}

std::chrono::steady_clock::time_point Worker::failed_at() const {
  std::lock_guard lock(mutex_);
  return failed_at_;
}

std::string Worker::failure() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

void Worker::check_images() const {
  for (const auto& f : images_) {
    try {
      f->check_unchanged();
    } catch (const Error&) {
      // logged once by ImageFile (image_changed); the attach is replaced
    }
  }
}

void Worker::fail_locked(const std::string& why, const std::string& op) {
  if (!failed_.load() && !stopping_ && serving_) {
    failure_ = why;
    failed_at_ = std::chrono::steady_clock::now();
    if (!options_.quiet)
      log::error("worker_failed", {{"backup", backup_id_}, {"pid", std::to_string(pid_)}, {why.substr(0, why.find('=')),
                                 why.substr(why.find('=') + 1)}, {"op", op}});
  }
  failed_.store(true, std::memory_order_release);
  if (pid_ > 0 && !exited_) ::kill(pid_, SIGKILL);
  for (auto& [id, p] : pending_) {
    p->done = true;
    p->err = EIO;
    p->message = "worker for backup " + backup_id_ + " failed (" + why + ")";
    p->cv.notify_all();
  }
  pending_.clear();
}

std::vector<std::byte> Worker::wait(Pending& p) {
  std::unique_lock lock(mutex_);
  // Leader/follower: one waiting caller at a time receives replies for
  // everyone; the others sleep until theirs is in. A caller whose own reply
  // arrives while it receives returns at once (no thread hand-off on the
  // path of a lone request, which is a small-file walk's every request).
  while (!p.done) {
    if (receiving_ || reaped_) {
      p.cv.wait(lock);
      continue;
    }
    receiving_ = true;
    bool more = true;
    while (more && !p.done) {
      lock.unlock();
      Header h;
      const ssize_t n = peek_reply(h);
      lock.lock();
      more = n >= 0 && take_reply_locked(h, static_cast<size_t>(n));
    }
    receiving_ = false;
    if (!more) ended_locked(lock);
    else hand_off_locked();
  }
  if (p.err != 0) {
    worker::Reader r(p.payload);
    std::string message = p.message;
    if (message.empty()) {
      try {
        message = r.str();
      } catch (const Error&) {
        message = std::strerror(p.err);
      }
    }
    throw Error(p.err, message);
  }
  return std::move(p.payload);
}

std::vector<std::byte> Worker::call(Op op, uint32_t volume, std::span<const std::byte> args) {
  Pending p;
  p.op = op;
  return submit(p, volume, args);
}

namespace {
// One request datagram; false (errno set) when it could not be sent.
bool send_request(int sock, const Header& h, std::span<const std::byte> args) {
  iovec iov[2] = {{const_cast<Header*>(&h), sizeof h}, {const_cast<std::byte*>(args.data()), args.size()}};
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = args.empty() ? 1 : 2;
  ssize_t sent;
  do sent = ::sendmsg(sock, &m, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  return sent >= 0;
}
}  // namespace

void Worker::post(Op op, uint32_t volume, std::span<const std::byte> args) {
  {
    std::lock_guard lock(mutex_);
    if (failed_.load() || stopping_) return;  // a failed worker holds nothing to let go
  }
  // Not sent (the worker just ended): its end is noticed by the next
  // request or by the watchdog.
  send_request(sock_.get(), Header{worker::kNoReply, static_cast<uint32_t>(op), volume}, args);
}

std::vector<std::byte> Worker::submit(Pending& p, uint32_t volume, std::span<const std::byte> args) {
  Header h{0, static_cast<uint32_t>(p.op), volume};
  {
    std::lock_guard lock(mutex_);
    if (failed_.load() || stopping_)
      throw Error(EIO, "worker for backup " + backup_id_ + " failed (" + failure_ + ")");
    p.id = h.id = next_id_++;
    p.started = std::chrono::steady_clock::now();
    pending_[p.id] = &p;
  }
  if (!send_request(sock_.get(), h, args)) {
    const int saved = errno;
    std::lock_guard lock(mutex_);
    if (!p.done) {
      pending_.erase(p.id);
      p.done = true;
      p.err = EIO;
      p.message = std::string("cannot send to the worker of backup ") + backup_id_ + ": " + std::strerror(saved);
      // A waiter handed receiving to this request may be the only one told.
      hand_off_locked();
    }
  }
  return wait(p);
}

size_t Worker::read(uint32_t volume, uint64_t handle, uint64_t ino, uint64_t offset, std::span<std::byte> into) {
  // The receiving caller writes the data straight into `into` (p.into).
  Pending p;
  p.op = Op::read;
  p.into = into.subspan(0, std::min(into.size(), max_read_));
  worker::Writer w;
  w.u64(handle);
  w.u64(ino);
  w.u64(offset);
  w.u64(p.into.size());
  submit(p, volume, w.buf);
  return p.read_n;
}

void Worker::hand_off_locked() {
  if (receiving_) return;
  for (auto& [id, other] : pending_)
    if (!other->done) {
      other->cv.notify_all();
      return;
    }
}

ssize_t Worker::peek_reply(Header& h) {
  for (;;) {
    const ssize_t n = ::recv(sock_.get(), &h, sizeof h, MSG_PEEK | MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < static_cast<ssize_t>(sizeof h)) return -1;  // EOF: the worker ended (or we shut the socket)
    return n;
  }
}

bool Worker::take_reply_locked(Header h, size_t n) {
  // Only the receiver takes datagrams: the one peeked is still the first.
  const size_t body = n - sizeof h;
  auto it = pending_.find(h.id);
  Pending* p = it == pending_.end() ? nullptr : it->second;
  iovec iov[2] = {{&h, sizeof h}, {nullptr, 0}};
  std::vector<std::byte> scratch;
  std::vector<std::byte>* dest = nullptr;
  if (p && p->op == Op::read && h.a == 0 && body <= p->into.size()) {
    iov[1] = {p->into.data(), body};
  } else {
    dest = p ? &p->payload : &scratch;
    if (dest->size() + body > kMaxReply) {
      fail_locked("protocol=reply larger than " + std::to_string(kMaxReply >> 20) + " MiB",
                  worker::op_name(p ? p->op : Op::setup));
      return false;
    }
    const size_t at = dest->size();
    dest->resize(at + body);
    iov[1] = {dest->data() + at, body};
  }
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = 2;
  ssize_t got;
  do got = ::recvmsg(sock_.get(), &m, 0);
  while (got < 0 && errno == EINTR);
  if (got != static_cast<ssize_t>(n)) return false;
  if (!p) return true;  // its caller gave up (the worker failed meanwhile)
  if (h.b & worker::kMore) return true;
  p->err = static_cast<int>(h.a);
  if (p->op == Op::read && h.a == 0) {
    if (dest) {
      p->err = EPROTO;
      p->message = "worker protocol: a read reply larger than asked";
    } else {
      p->read_n = body;
    }
  }
  p->done = true;
  pending_.erase(it);
  p->cv.notify_all();
  return true;
}

void Worker::ended_locked(std::unique_lock<std::mutex>& lock) {
  if (reaped_) return;
  // The socket ended or the worker is a zombie: kill it if it still runs
  // (a worker that broke the protocol), wait until it is a zombie, note
  // that its pid must not be signalled any more, then reap it.
  if (!exited_) ::kill(pid_, SIGKILL);
  reaped_ = true;  // from here on nobody receives
  std::string oldest_op = "none";
  auto oldest = std::chrono::steady_clock::time_point::max();
  for (auto& [id, p] : pending_)
    if (p->started < oldest) {
      oldest = p->started;
      oldest_op = worker::op_name(p->op);
    }
  lock.unlock();
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  lock.lock();
  exited_ = true;
  lock.unlock();
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
  }
  lock.lock();
  fail_locked(describe_status(st), oldest_op);
  watchdog_cv_.notify_all();
}

void Worker::watchdog_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_ && !reaped_) {
    watchdog_cv_.wait_for(lock, std::chrono::milliseconds(500));
    if (stopping_ || reaped_) break;
    const auto now = std::chrono::steady_clock::now();
    const Pending* oldest = nullptr;
    for (auto& [id, p] : pending_)
      if (!oldest || p->started < oldest->started) oldest = p;
    if (oldest && now - oldest->started > options_.timeout && !failed_.load())
      fail_locked("timeout=" + std::to_string(options_.timeout.count()), worker::op_name(oldest->op));
    // Nobody receives while no request is in flight: a worker that ends
    // then (or the one just killed) is noticed, logged and reaped here.
    if (!receiving_) {
      siginfo_t info{};
      info.si_pid = 0;
      if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0)
        ended_locked(lock);
    }
  }
}

FilesystemPtr Worker::filesystem(const std::shared_ptr<Worker>& worker, uint32_t index) {
  return std::make_shared<WorkerFilesystem>(worker, index);
}

}  // namespace sendense
