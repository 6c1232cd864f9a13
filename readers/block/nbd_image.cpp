#include "readers/block/nbd_image.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libnbd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "readers/block/child_process.h"
#include "readers/block/qemu_chain_json.h"
#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace nbd {

namespace {

constexpr const char* kFolderPrefix = "qemu-nbd-";

// Removes the folders of daemons that are gone (a crash leaves the socket
// and log behind; their qemu-nbd died with them).
void remove_stale_folders(const std::string& base) {
  DIR* d = ::opendir(base.c_str());
  if (d == nullptr) return;
  const std::string prefix = kFolderPrefix;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    const std::string dir = base + "/" + name;
    for (const char* f : {"/nbd.sock", "/qemu-nbd.log"}) ::unlink((dir + f).c_str());
    ::rmdir(dir.c_str());
  }
  ::closedir(d);
}

// A private 0700 folder for the socket and qemu-nbd's output, removed with
// what it holds.
class PrivateDir {
 public:
  PrivateDir() {
    const std::string base = runtime_base_dir();
    static std::once_flag cleaned;
    std::call_once(cleaned, [&] { remove_stale_folders(base); });
    std::string tmpl = base + "/" + kFolderPrefix + std::to_string(::getpid()) + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw sys_error("cannot create a private folder for qemu-nbd", base);
    path_ = tmpl;  // mkdtemp makes it 0700
  }
  ~PrivateDir() {
    for (const char* f : {"/nbd.sock", "/qemu-nbd.log"}) ::unlink((path_ + f).c_str());
    if (::rmdir(path_.c_str()) != 0)
      log::warn("qemu_nbd_cleanup", {{"folder", path_}, {"error", std::strerror(errno)}});
  }
  PrivateDir(const PrivateDir&) = delete;
  PrivateDir& operator=(const PrivateDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct HandleDeleter {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};
using Handle = std::unique_ptr<nbd_handle, HandleDeleter>;

std::string last_nbd_error() {
  const char* e = nbd_get_error();
  return e ? e : "unknown libnbd error";
}

std::atomic<int64_t> g_request_timeout_ms{std::chrono::milliseconds(kRequestTimeout).count()};

enum class Waited { done, failed, timed_out };

// Drives the handle's state machine until `state()` says done (1) or failed
// (-1), or `deadline` passes. The synchronous libnbd calls would wait for
// ever on a server that accepted the connection but stopped answering.
template <typename State>
Waited wait_for(nbd_handle* h, std::chrono::steady_clock::time_point deadline, State state) {
  while (true) {
    const int s = state();
    if (s != 0) return s > 0 ? Waited::done : Waited::failed;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return Waited::timed_out;
    // (nbd_poll passes on poll's EINTR: a signal is no failed read.)
    if (nbd_poll(h, static_cast<int>(std::min<int64_t>(left, 60'000))) == -1 && nbd_get_errno() != EINTR)
      return Waited::failed;
  }
}

// Connects `h` to the server at `socket` within `deadline`.
Waited connect_within(nbd_handle* h, const std::string& socket, std::chrono::steady_clock::time_point deadline) {
  if (nbd_aio_connect_unix(h, socket.c_str()) == -1) return Waited::failed;
  return wait_for(h, deadline, [&] {
    if (nbd_aio_is_ready(h)) return 1;
    return nbd_aio_is_dead(h) || nbd_aio_is_closed(h) ? -1 : 0;
  });
}

std::chrono::steady_clock::time_point request_deadline() {
  return std::chrono::steady_clock::now() + request_timeout();
}

class NbdImage final : public BlockDevice {
  class Lease;

 public:
  NbdImage(const std::vector<ChainLink>& chain, std::string display) : display_(std::move(display)) {
    const std::string program = find_program("qemu-nbd");
    if (program.empty())
      throw Error(ENOENT, "needs qemu-nbd (package qemu-utils) to read " + std::string(to_string(chain[0].format)) +
                              (chain[0].native_limit.empty() ? "" : " (" + chain[0].native_limit + ")"), display_);
    socket_ = dir_.path() + "/nbd.sock";
    if (socket_.size() >= sizeof(sockaddr_un{}.sun_path))
      throw Error(ENAMETOOLONG, "socket path too long for a unix socket: " + socket_, display_);
    ChildSpec spec;
    spec.program = program;
    spec.argv = {"qemu-nbd", "--read-only", "--persistent", "--shared=" + std::to_string(kConnections),
                 "--socket=" + socket_, qemu_json_filename(chain)};
    spec.output_path = dir_.path() + "/qemu-nbd.log";
    child_ = std::make_unique<ChildProcess>(spec);

    Handle first = connect_when_up();
    const int64_t size = nbd_get_size(first.get());
    if (size < 0) throw Error(EIO, "qemu-nbd: cannot get the export size: " + last_nbd_error(), display_);
    size_ = static_cast<uint64_t>(size);
    const int64_t min_block = nbd_get_block_size(first.get(), LIBNBD_SIZE_MINIMUM);
    if (min_block > 1) {
      if ((min_block & (min_block - 1)) != 0 || min_block > 65536)
        throw Error(EIO, "qemu-nbd announced an unusable minimum block size " + std::to_string(min_block), display_);
      align_ = static_cast<uint64_t>(min_block);
    }
    free_.push_back(std::move(first));
    opened_ = 1;
    log::info("qemu_nbd_started", {{"image", display_},
                                   {"pid", std::to_string(child_->pid())},
                                   {"socket", socket_},
                                   {"links", std::to_string(chain.size())},
                                   {"format", to_string(chain[0].format)}});
  }

  ~NbdImage() override {
    free_.clear();  // close every connection before the server goes
    const pid_t pid = child_->pid();
    child_->terminate();
    log::info("qemu_nbd_stopped", {{"image", display_}, {"pid", std::to_string(pid)}});
  }
  NbdImage(const NbdImage&) = delete;
  NbdImage& operator=(const NbdImage&) = delete;

  uint64_t size() const override { return size_; }
  std::string describe() const override { return display_; }
  std::string reader() const override { return "qemu-nbd"; }

  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    if (buf.empty()) return;
    Lease lease(*this);
    const uint64_t end = offset + buf.size();
    if (offset % align_ == 0 && end % align_ == 0) {
      read_direct(lease, offset, buf.data(), buf.size());
      return;
    }
    // qemu-nbd announces a minimum block size (512 for VHDX) and libnbd
    // holds requests to it: read the covering aligned range. (qemu reports
    // sizes in whole sectors, so the range stays inside the export.)
    const uint64_t start = offset - offset % align_;
    const uint64_t stop = std::min(size_, (end + align_ - 1) / align_ * align_);
    std::vector<std::byte> bounce(static_cast<size_t>(stop - start));
    read_direct(lease, start, bounce.data(), bounce.size());
    std::memcpy(buf.data(), bounce.data() + (offset - start), buf.size());
  }

 private:
  void read_direct(Lease& lease, uint64_t offset, std::byte* out, size_t len) const {
    size_t done = 0;
    while (done < len) {
      const size_t n = std::min(len - done, kMaxRequestBytes);
      nbd_handle* h = lease.handle();
      Waited w = Waited::failed;
      const int64_t cookie = nbd_aio_pread(h, out + done, n, offset + done, NBD_NULL_COMPLETION, 0);
      if (cookie != -1)
        w = wait_for(h, request_deadline(), [&] { return nbd_aio_command_completed(h, static_cast<uint64_t>(cookie)); });
      if (w != Waited::done) {
        const std::string why = w == Waited::timed_out ? "qemu-nbd did not answer within " +
                                                             std::to_string(request_timeout().count()) + " ms"
                                                       : last_nbd_error();
        lease.discard();  // a failed connection is not put back (closing it abandons the request)
        throw Error(EIO, "read of " + std::to_string(n) + " bytes at offset " + std::to_string(offset + done) +
                             " through qemu-nbd failed: " + why + server_state(), display_);
      }
      done += n;
    }
  }

  std::string server_state() const {
    std::lock_guard lock(child_mutex_);
    if (child_->running()) return "";
    const std::string output = child_->output(1024);
    return " (qemu-nbd " + child_->exit_description() + (output.empty() ? "" : ": " + output) + ")";
  }

  // Connects once qemu-nbd listens; fails if it exits or takes too long.
  Handle connect_when_up() {
    const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
    std::string last_error;
    while (true) {
      if (::access(socket_.c_str(), F_OK) == 0) {
        Handle h(nbd_create());
        if (!h) throw Error(EIO, "libnbd: " + last_nbd_error(), display_);
        const Waited w = connect_within(h.get(), socket_, deadline);
        if (w == Waited::done) return h;
        last_error = w == Waited::timed_out ? "it did not answer" : last_nbd_error();
      }
      if (!child_->running()) {
        const std::string output = child_->output();
        log::error("qemu_nbd_failed", {{"image", display_}, {"status", child_->exit_description()}, {"output", output}});
        throw Error(EIO, "qemu-nbd " + child_->exit_description() + " before serving the image" +
                             (output.empty() ? std::string() : ": " + output), display_);
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        const std::string output = child_->output();
        log::error("qemu_nbd_failed", {{"image", display_}, {"status", "timeout"}, {"output", output}});
        throw Error(EIO, "qemu-nbd did not serve the image within " + std::to_string(kStartTimeout.count()) + " s" +
                             (last_error.empty() ? std::string() : " (" + last_error + ")") +
                             (output.empty() ? std::string() : ": " + output), display_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  Handle open_connection() const {
    Handle h(nbd_create());
    if (!h) throw Error(EIO, "libnbd: " + last_nbd_error(), display_);
    const Waited w = connect_within(h.get(), socket_, request_deadline());
    if (w != Waited::done)
      throw Error(EIO, "cannot connect to qemu-nbd: " +
                           (w == Waited::timed_out ? "qemu-nbd did not answer within " +
                                                         std::to_string(request_timeout().count()) + " ms"
                                                   : last_nbd_error()) +
                           server_state(), display_);
    return h;
  }

  class Lease {
   public:
    explicit Lease(const NbdImage& image) : image_(image), handle_(image.borrow()) {}
    ~Lease() { image_.give_back(std::move(handle_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    nbd_handle* handle() const { return handle_.get(); }
    void discard() { handle_.reset(); }

   private:
    const NbdImage& image_;
    Handle handle_;
  };

  Handle borrow() const {
    std::unique_lock lock(pool_mutex_);
    if (!pool_cv_.wait_for(lock, kBorrowTimeout, [&] { return !free_.empty() || opened_ < kConnections; }))
      throw Error(EIO, "every connection to qemu-nbd has been busy for " + std::to_string(kBorrowTimeout.count()) +
                           " s (unresponsive storage?)", display_);
    if (!free_.empty()) {
      Handle h = std::move(free_.back());
      free_.pop_back();
      return h;
    }
    ++opened_;
    lock.unlock();
    try {
      return open_connection();
    } catch (...) {
      lock.lock();
      --opened_;
      pool_cv_.notify_one();
      throw;
    }
  }

  // A discarded (null) handle frees its slot: the next borrow reconnects.
  void give_back(Handle h) const {
    {
      std::lock_guard lock(pool_mutex_);
      if (h)
        free_.push_back(std::move(h));
      else
        --opened_;
    }
    pool_cv_.notify_one();
  }

  // Destroyed in reverse order: connections, then the process, then the folder.
  PrivateDir dir_;
  std::string display_;
  std::string socket_;
  mutable std::mutex child_mutex_;
  std::unique_ptr<ChildProcess> child_;
  uint64_t size_ = 0;
  uint64_t align_ = 1;  // the server's minimum block size
  mutable std::mutex pool_mutex_;
  mutable std::condition_variable pool_cv_;
  mutable std::vector<Handle> free_;  // guarded by pool_mutex_
  mutable size_t opened_ = 0;         // guarded by pool_mutex_
};

}  // namespace

std::string qemu_json_filename(const std::vector<ChainLink>& chain) {
  if (chain.empty()) throw Error(EINVAL, "empty image chain");
  return "json:" + qemu_chain_json(chain);
}

std::chrono::milliseconds request_timeout() { return std::chrono::milliseconds(g_request_timeout_ms.load()); }

void set_request_timeout(std::chrono::milliseconds timeout) { g_request_timeout_ms.store(timeout.count()); }

std::string runtime_base_dir() {
  if (const char* rd = ::getenv("RUNTIME_DIRECTORY"); rd && rd[0] == '/') {
    const std::string s(rd);
    return s.substr(0, s.find(':'));  // systemd lists several separated by ':'
  }
  if (::geteuid() == 0) {
    const std::string dir = "/run/sendense-restore";
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw sys_error("cannot create runtime folder", dir);
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) throw sys_error("cannot stat runtime folder", dir);
    if (!S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0)
      throw Error(EACCES, "runtime folder is not a root-owned folder writable only by root", dir);
    return dir;
  }
  const char* tmp = ::getenv("TMPDIR");
  return tmp && tmp[0] == '/' ? tmp : "/tmp";
}

}  // namespace nbd

BlockDevicePtr open_nbd_image(const std::vector<ChainLink>& chain, const std::string& display) {
  if (chain.empty()) throw Error(EINVAL, "empty image chain", display);
  return std::make_shared<nbd::NbdImage>(chain, display);
}

}  // namespace sendense
