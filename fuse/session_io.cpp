#include "fuse/session_io.h"

#include <linux/fuse.h>
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace {

// A unique id the kernel never issues (it counts up from 1 in steps of 2).
constexpr uint64_t kReplayUnique = 0x7ffffffffffffff0ULL;
constexpr uint32_t kNotifyResend = 7;  // FUSE_NOTIFY_RESEND (Linux 6.9), newer than Debian 12's headers

}  // namespace

SessionIo::SessionIo(std::string replay, std::function<void(std::string_view)> on_init)
    : on_init_(std::move(on_init)), replay_(std::move(replay)) {
  if (!replay_.empty()) {
    if (replay_.size() < sizeof(fuse_in_header)) throw Error(EINVAL, "kept FUSE INIT request is too short");
    fuse_in_header h;
    std::memcpy(&h, replay_.data(), sizeof h);
    if (h.opcode != FUSE_INIT || h.len != replay_.size()) throw Error(EINVAL, "kept FUSE INIT request is damaged");
    h.unique = kReplayUnique;
    std::memcpy(replay_.data(), &h, sizeof h);
    replay_pending_ = true;
    captured_ = true;
  }
}

void SessionIo::install(fuse_session* se, int fd) {
  fuse_custom_io io{};
  io.read = &SessionIo::read;
  io.writev = &SessionIo::writev;
  io.splice_send = &SessionIo::splice_send;
  if (fuse_session_custom_io(se, &io, fd) != 0) throw Error(EIO, "libfuse refused the session's I/O");
}

bool SessionIo::resumed() const {
  std::lock_guard lock(mutex_);
  return resumed_;
}

ssize_t SessionIo::read(int fd, void* buf, size_t len, void* userdata) {
  SessionIo& self = io_of(userdata);
  {
    std::unique_lock lock(self.mutex_);
    if (self.replay_pending_) {
      if (len < self.replay_.size()) {
        errno = EINVAL;
        return -1;
      }
      self.replay_pending_ = false;
      self.replaying_ = true;
      std::memcpy(buf, self.replay_.data(), self.replay_.size());
      return static_cast<ssize_t>(self.replay_.size());
    }
    // libfuse answers every request with EIO until it has processed INIT:
    // no other thread reads the kernel's requests before that.
    self.replayed_.wait(lock, [&] { return !self.replaying_; });
  }
  const ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header))) {
    bool capture = false;
    {
      std::lock_guard lock(self.mutex_);
      if (!self.captured_ && static_cast<const fuse_in_header*>(buf)->opcode == FUSE_INIT) {
        self.captured_ = true;
        capture = true;
      }
    }
    if (capture && self.on_init_) self.on_init_(std::string_view(static_cast<const char*>(buf), static_cast<size_t>(n)));
  }
  return n;
}

ssize_t SessionIo::writev(int fd, struct iovec* iov, int count, void* userdata) {
  SessionIo& self = io_of(userdata);
  if (count > 0 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    if (out.unique == kReplayUnique) {
      // The answer to the replayed INIT: the kernel has its answer from the
      // first run. Ask it to send again what that run left unanswered.
      size_t total = 0;
      for (int i = 0; i < count; ++i) total += iov[i].iov_len;
      if (out.error != 0)
        log::error("fuse_takeover_failed", {{"error", std::strerror(-out.error)}, {"what", "replayed INIT refused"}});
      fuse_out_header resend{sizeof(fuse_out_header), static_cast<int32_t>(kNotifyResend), 0};
      if (::write(fd, &resend, sizeof resend) != static_cast<ssize_t>(sizeof resend))
        log::warn("fuse_resend_failed", {{"error", std::strerror(errno)},
                                         {"effect", "requests the previous run had taken wait until interrupted"}});
      {
        std::lock_guard lock(self.mutex_);
        self.replaying_ = false;
        self.resumed_ = out.error == 0;
      }
      self.replayed_.notify_all();
      return static_cast<ssize_t>(total);
    }
  }
  return ::writev(fd, iov, count);
}

ssize_t SessionIo::splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned int flags,
                               void* userdata) {
  // Never the replayed INIT's reply (writev swallows that one): only data
  // replies come this way, after a header of their own.
  const ssize_t n = ::splice(fdin, offin, fdout, offout, len, flags);
  if (n > static_cast<ssize_t>(sizeof(fuse_out_header))) count_spliced(userdata, static_cast<size_t>(n) - sizeof(fuse_out_header));
  return n;
}

}  // namespace sendense
