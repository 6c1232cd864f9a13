// sendense-restore-worker BACKUP_ID: one backup's parsers in a sandbox
// (issue 10). Started by the daemon only (fuse/worker_client.h), with the
// control socket as fd 3 and the image files it opened as fd 4.. ; the
// backup id on the command line names it in ps and /proc/PID/cmdline.
// Or `sendense-restore-worker --spare PAD`: started ahead with the socket
// only; the setup then brings the images and the id (worker/spare.h).
//
// It reads the setup (worker/protocol.h), enters the sandbox
// (worker/sandbox.h), opens the backup through the engine with the
// userspace readers only, answers a Hello, then serves Filesystem requests
// with a small pool of threads until the socket closes (the daemon let go
// or died): then it ends at once.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "readers/block/image_file.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/engine/open_backup.h"
#include "readers/volume/volume.h"
#include "worker/crash_report.h"
#include "worker/probes.h"
#include "worker/protocol.h"
#include "worker/sandbox.h"
#include "worker/spare.h"

#if defined(__SANITIZE_ADDRESS__)
// Leak checking runs ptrace at exit, which the filter forbids; the daemon
// also starts us with detect_leaks=0.
extern "C" const char* __asan_default_options() { return "detect_leaks=0"; }
#endif

namespace sendense::worker {
namespace {

constexpr size_t kMaxRequest = 64 * 1024;
// The largest datagram the socket takes is about half its send buffer
// (which the daemon raised); replies bigger than this go in parts, reads
// are cut to it.
size_t g_max_part = 64 * 1024;

void size_parts() {
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  if (::getsockopt(kControlFd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) == 0) g_max_part = max_part_for(sndbuf);
}

[[noreturn]] void quit(int code) { ::syscall(SYS_exit_group, code); __builtin_unreachable(); }

void send_all(const Header& h, std::span<const std::byte> payload) {
  iovec iov[2] = {{const_cast<Header*>(&h), sizeof h},
                  {const_cast<std::byte*>(payload.data()), payload.size()}};
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = payload.empty() ? 1 : 2;
  for (;;) {
    if (::sendmsg(kControlFd, &m, MSG_NOSIGNAL) >= 0) return;
    if (errno == EINTR) continue;
    quit(0);  // the daemon is gone
  }
}

// A reply: in parts of g_max_part when larger (flag kMore on all but the last).
void reply(uint64_t id, std::span<const std::byte> payload) {
  size_t pos = 0;
  do {
    const size_t n = std::min(g_max_part, payload.size() - pos);
    const bool last = pos + n == payload.size();
    send_all(Header{id, 0, last ? 0u : kMore}, payload.subspan(pos, n));
    pos += n;
  } while (pos < payload.size());
}

void reply_error(uint64_t id, int code, const std::string& message) {
  Writer w;
  w.str(message.substr(0, 4000));
  send_all(Header{id, static_cast<uint32_t>(code > 0 ? code : EIO), 0}, w.buf);
}

// Where regular file `ino`'s bytes lie in the passed files (worker/protocol.h);
// empty when the reader cannot say, past `max_extents`, or on an error
// (the file's reads then come through the worker, which reports it).
std::vector<MappedExtent> mapped(Filesystem& fs, uint64_t ino, size_t max_extents) {
  std::vector<MappedExtent> map;
  try {
    if (auto extents = fs.map_file(ino, max_extents)) {
      for (const Extent& e : *extents) {
        const int fd = e.file ? e.file->passed_fd() : -1;
        if (e.file && fd < kFirstImageFd) return {};  // not a file the daemon passed: it cannot read it
        map.push_back({e.file ? static_cast<uint32_t>(fd - kFirstImageFd) : kZeros, e.offset, e.length});
      }
    }
  } catch (const Error&) {
    return {};
  }
  return map;
}

// The attributes, then the map of a small regular file.
void put_attr_map(Writer& w, Filesystem& fs, const Attr& a) {
  put_attr(w, a);
  const bool small = S_ISREG(a.mode) && a.size > 0 && a.size <= kMapMaxSize;
  put_map(w, small ? mapped(fs, a.ino, kMapMaxExtents) : std::vector<MappedExtent>{});
}

class Server {
 public:
  explicit Server(std::vector<FilesystemPtr> volumes) : volumes_(std::move(volumes)), open_(volumes_.size()) {}

  // Every thread receives its own requests: a SOCK_SEQPACKET socket hands
  // each datagram to exactly one receiver, and no thread hands work to
  // another (each hand-off is a wake-up on the path of every request).
  [[noreturn]] void run(unsigned threads) {
    for (unsigned i = 1; i < threads; ++i) pool_.emplace_back([this] { work(); });
    work();
  }

 private:
  [[noreturn]] void work() {
    std::vector<std::byte> msg(kMaxRequest);
    std::vector<std::byte> data;
    for (;;) {
      const ssize_t n = ::recv(kControlFd, msg.data(), msg.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) quit(0);  // the daemon closed the socket (detach, shutdown, crash)
      if (static_cast<size_t>(n) < sizeof(Header)) quit(2);
      Header h;
      std::memcpy(&h, msg.data(), sizeof h);
      try {
        handle(h, Reader(std::span(msg.data(), static_cast<size_t>(n)).subspan(sizeof h)), data);
      } catch (const Error& e) {
        if (h.id != kNoReply) reply_error(h.id, e.code(), e.what());
      } catch (const std::bad_alloc&) {
        if (h.id != kNoReply) reply_error(h.id, ENOMEM, "worker out of memory");
      } catch (const std::exception& e) {
        if (h.id != kNoReply) reply_error(h.id, EIO, e.what());
      }
    }
  }

  // The filesystem handle behind the daemon's handle `handle` of volume
  // `volume`, opening inode `ino` the first time the handle is seen.
  uint64_t file(uint32_t volume, Filesystem& fs, uint64_t handle, uint64_t ino) {
    {
      std::lock_guard lock(mutex_);
      if (auto it = open_[volume].find(handle); it != open_[volume].end()) return it->second;
    }
    const uint64_t mine = fs.open(ino);  // outside the lock: an open reads the inode
    std::lock_guard lock(mutex_);
    auto [it, added] = open_[volume].emplace(handle, mine);
    if (!added) fs.release(mine);  // two first reads raced: one handle is kept
    return it->second;
  }

  void handle(const Header& h, Reader r, std::vector<std::byte>& data) {
    if (static_cast<Op>(h.a) == Op::probe) {
      Writer w;
      put_probe_result(w, try_probe(r.str()));
      reply(h.id, w.buf);
      return;
    }
    if (h.b >= volumes_.size()) throw Error(EINVAL, "worker protocol: no volume " + std::to_string(h.b));
    Filesystem& fs = *volumes_[h.b];
    Writer w;
    switch (static_cast<Op>(h.a)) {
      case Op::getattr:
        put_attr_map(w, fs, fs.getattr(r.u64()));
        break;
      case Op::lookup: {
        const uint64_t dir = r.u64();
        const std::string name = r.str();
        auto a = fs.lookup(dir, name);
        w.u32(a ? 1 : 0);
        if (a) put_attr_map(w, fs, *a);
        break;
      }
      case Op::readdir: {
        const uint64_t dir = r.u64();
        const uint64_t cookie = r.u64();
        const size_t max = std::min<uint64_t>(r.u64(), kMaxPageEntries);
        const bool attrs = r.u32() != 0;
        const auto entries = fs.readdir_page(dir, cookie, max, attrs);
        w.u32(static_cast<uint32_t>(entries.size()));
        for (const auto& e : entries) {
          put_entry(w, e);
          std::optional<Attr> a;
          if (attrs && e.ino != 0 && e.name != "." && e.name != "..") {
            try {
              a = fs.getattr(e.ino);
            } catch (const Error&) {
              // listed without: the daemon asks (and reports) on its own
            }
          }
          w.u32(a ? 1 : 0);
          if (a) put_attr_map(w, fs, *a);
        }
        break;
      }
      case Op::readlink:
        w.str(fs.readlink(r.u64()));
        break;
      case Op::read: {
        const uint64_t handle = r.u64();
        const uint64_t ino = r.u64();
        const uint64_t offset = r.u64();
        const uint64_t size = std::min<uint64_t>(r.u64(), g_max_part);
        const uint64_t fh = file(h.b, fs, handle, ino);
        if (data.size() < size) data.resize(size);
        const size_t n = fs.read(fh, offset, std::span(data.data(), size));
        send_all(Header{h.id, 0, 0}, std::span<const std::byte>(data.data(), n));
        return;
      }
      case Op::release: {
        const uint32_t count = r.count(8);
        std::vector<uint64_t> opened;
        for (uint32_t i = 0; i < count; ++i) {
          const uint64_t theirs = r.u64();
          std::lock_guard lock(mutex_);
          auto it = open_[h.b].find(theirs);
          if (it == open_[h.b].end()) continue;  // never read: never opened
          opened.push_back(it->second);
          open_[h.b].erase(it);
        }
        for (uint64_t handle : opened) fs.release(handle);
        return;  // kNoReply
      }
      case Op::listxattr: {
        auto names = fs.listxattr(r.u64());
        w.u32(static_cast<uint32_t>(names.size()));
        for (const auto& n : names) w.str(n);
        break;
      }
      case Op::getxattr: {
        const uint64_t ino = r.u64();
        const std::string name = r.str();
        auto v = fs.getxattr(ino, name);
        w.u32(v ? 1 : 0);
        if (v) w.str(*v);
        break;
      }
      case Op::map:
        put_map(w, mapped(fs, r.u64(), kMapMaxExtentsAsked));
        break;
      case Op::xattr_names: {
        const uint32_t count = r.count(8);
        if (count > kMaxXattrBatch) throw Error(EINVAL, "worker protocol: too many inodes in one xattr_names");
        w.u32(count);
        for (uint32_t i = 0; i < count; ++i) {
          const uint64_t ino = r.u64();
          std::vector<std::string> names;
          try {
            names = fs.listxattr(ino);
          } catch (const Error&) {
            w.u32(0);  // the daemon asks (and reports) on its own
            continue;
          }
          w.u32(1);
          w.u32(static_cast<uint32_t>(names.size()));
          for (const auto& n : names) w.str(n);
        }
        break;
      }
      case Op::read_files: {
        const uint32_t count = r.count(16);
        std::vector<Filesystem::WholeFile> files(count);
        uint64_t total = 0;
        for (auto& f : files) {
          f.ino = r.u64();
          f.size = r.u64();
          total += f.size;
          if (f.size > kReadFilesMaxSize) throw Error(EINVAL, "worker protocol: a file too large for read_files");
        }
        if (count > kReadFilesMax || total > kReadFilesMaxBytes)
          throw Error(EINVAL, "worker protocol: too much in one read_files");
        auto got = fs.read_files(files);
        for (const auto& bytes : got) {
          w.u32(bytes.empty() ? 0 : 1);
          w.raw(bytes.data(), bytes.size());
        }
        break;
      }
      case Op::statfs: {
        const FsStat s = fs.statfs();
        for (uint64_t v : {s.block_size, s.blocks, s.blocks_free, s.files, s.files_free, s.name_max}) w.u64(v);
        break;
      }
      default:
        throw Error(EINVAL, "worker protocol: unknown op " + std::to_string(h.a));
    }
    if (h.id != kNoReply) reply(h.id, w.buf);
  }

  std::vector<FilesystemPtr> volumes_;
  std::vector<std::thread> pool_;
  std::mutex mutex_;
  // Per volume: the daemon's handle number -> the filesystem's handle.
  std::vector<std::unordered_map<uint64_t, uint64_t>> open_;
};

// `backup_id`: the one the worker was started for; empty for a spare,
// which takes its images and its name from the setup.
int run(std::string backup_id, char** argv) {
  // The setup, then the sandbox, then the first byte of the backup.
  size_parts();
  const bool spare = backup_id.empty();
  if (spare) {
    try {
      check_name_can_change();
      leave_host_mounts();  // before it waits (sandbox.h)
      prepare_filter();
      say_ready();
    } catch (const Error&) {
      return 2;
    }
  }
  // Sized by a peek: zeroing a 4 MiB buffer for a setup of a few hundred
  // bytes cost each attach milliseconds of page faults.
  ssize_t n;
  do n = ::recv(kControlFd, nullptr, 0, MSG_PEEK | MSG_TRUNC);
  while (n < 0 && errno == EINTR);
  if (n < static_cast<ssize_t>(sizeof(Header)) || n > 4 * 1024 * 1024) return 2;
  std::vector<std::byte> buf(static_cast<size_t>(n));
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSpareFiles)];
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  do n = ::recvmsg(kControlFd, &msg, 0);
  while (n < 0 && errno == EINTR);
  if (n < static_cast<ssize_t>(sizeof(Header))) return 2;
  Header h;
  std::memcpy(&h, buf.data(), sizeof h);
  if (static_cast<Op>(h.a) != Op::setup) return 2;
  Setup setup;
  try {
    const std::vector<int> passed = passed_descriptors(msg);
    Reader r(std::span(buf.data(), static_cast<size_t>(n)).subspan(sizeof h));
    setup = decode_setup(r);
    if (spare) {
      if (passed.size() != setup.files.size())
        throw Error(EINVAL, "setup of " + std::to_string(setup.files.size()) + " image files with " +
                                std::to_string(passed.size()) + " descriptors", setup.backup_id);
      place_image_descriptors(passed);
      take_name(argv, setup.backup_id);
      backup_id = setup.backup_id;
      install_crash_report(backup_id);
    } else if (!passed.empty()) {
      throw Error(EINVAL, "descriptors passed to a worker started with its images", backup_id);
    } else if (setup.backup_id != backup_id) {
      throw Error(EINVAL, "setup for " + setup.backup_id + ", started for " + backup_id);
    }

    PassedImageFiles table;
    for (const auto& f : setup.files) table.fds[f.name] = f.fd;
    for (const auto& [from, to] : setup.canonical) table.canonical[from] = to;
    install_passed_image_files(std::move(table));

    SandboxOptions sandbox;
    sandbox.uid = setup.uid;
    sandbox.gid = setup.gid;
    sandbox.memory_limit = setup.memory_limit;
    sandbox.mount_namespace = (setup.namespaces & CLONE_NEWNS) != 0;
    for (const auto& m : enter_sandbox(sandbox))
      log::info("worker_sandbox_missing", {{"backup", backup_id}, {"what", m}});
  } catch (const std::exception& e) {
    const Error* err = dynamic_cast<const Error*>(&e);
    reply_error(0, err ? err->code() : EIO, std::string("worker sandbox: ") + e.what());
    return 1;
  }

  std::vector<FilesystemPtr> volumes;
  Hello hello;
  try {
    std::vector<DiskSpec> specs;
    for (const auto& [path, format] : setup.disks) specs.push_back({path, static_cast<ImageFormat>(format)});
    // One budget for every cache of the backup: this worker's images and volumes.
    auto budget = std::make_shared<CacheBudget>(setup.fs_open.cache_budget_bytes);
    OpenedDisks disks = open_disks(specs, nullptr, budget);  // qemu-nbd chains never come to a worker
    hello.readers = disks.readers;
    const BackupLayout layout = discover_backup(disks.devices);
    hello.warnings = layout.warnings;
    EngineOptions engine;
    engine.fs_open = setup.fs_open;
    engine.fs_open.cache_budget = budget;
    engine.label = backup_id;
    OpenedVolumes opened = open_volumes(layout, engine);
    for (OpenedVolume& o : opened.volumes) {
      HelloVolume v;
      v.name = o.layout->name;
      v.type = to_string(o.layout->type);
      v.fs_type = o.fs->type_name();
      v.offset = o.layout->offset;
      v.length = o.layout->length;
      v.root_ino = o.fs->root_ino();
      v.journal = o.fs->journal();
      hello.volumes.push_back(std::move(v));
      volumes.push_back(std::move(o.fs));
    }
    for (const VolumeProblem& p : opened.problems) {
      const Volume& v = *p.layout;
      hello.problems.push_back({v.name, to_string(v.type), p.failed, p.reason, static_cast<uint32_t>(v.type), v.disk,
                                v.offset, v.length, v.device != nullptr});
    }
  } catch (const std::exception& e) {
    const Error* err = dynamic_cast<const Error*>(&e);
    reply_error(0, err ? err->code() : EIO, e.what());
    return 1;
  }
  reply(0, encode(hello));
  Server server(std::move(volumes));
  server.run(setup.threads == 0 ? 1 : std::min(setup.threads, 64u));
}

}  // namespace
}  // namespace sendense::worker

int main(int argc, char** argv) {
  const bool spare = argc == 3 && std::strcmp(argv[1], sendense::worker::kSpareFlag) == 0;
  if ((argc != 2 && !spare) || ::fcntl(sendense::worker::kControlFd, F_GETFD) < 0) {
    std::cerr << "usage: sendense-restore-worker BACKUP_ID | --spare PAD\n"
                 "Started by sendense-restorefs (--isolation worker) only: it serves one backup's\n"
                 "filesystems over the socket it is given as descriptor 3.\n";
    return 2;
  }
  // pid 1 of its namespace: SIGTERM would be ignored without a handler.
  ::signal(SIGTERM, [](int) { ::syscall(SYS_exit_group, 0); });
  ::signal(SIGPIPE, SIG_IGN);
  sendense::worker::install_crash_report(spare ? "(spare)" : argv[1]);
  const int rc = sendense::worker::run(spare ? std::string() : std::string(argv[1]), argv);
  ::syscall(SYS_exit_group, rc);
}
