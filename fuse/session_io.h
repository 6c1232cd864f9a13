// How a FUSE session talks to its /dev/fuse descriptor, so that a new run of
// the daemon can take over a mount a previous run left behind (the holder
// kept its descriptor, fuse/fuse_holder.h) instead of mounting anew: NFS
// servers and SMB sessions hold descriptors into the mount, and a new mount
// would strand them (new device number, ESTALE).
//
// The kernel negotiates a connection once, with FUSE_INIT, and libfuse
// serves nothing until it has processed one. So on a fresh mount we keep a
// copy of the kernel's INIT request (the holder stores it with the
// descriptor); on a takeover we hand libfuse that copy as the first request,
// under a unique id the kernel never issued, and swallow its reply. The same
// code then agrees to the same terms the kernel already holds. Requests the
// previous run had read but not answered when it died are sent again with
// FUSE_NOTIFY_RESEND (Linux 6.9+).
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace sendense {

class SessionIo {
 public:
  // A fresh mount (`replay` empty): `on_init` receives the kernel's INIT
  // request once. A takeover: `replay` is the INIT request the kernel sent
  // the first run.
  SessionIo(std::string replay, std::function<void(std::string_view)> on_init);
  SessionIo(const SessionIo&) = delete;
  SessionIo& operator=(const SessionIo&) = delete;

  // Installs this as `se`'s I/O on `fd` (the session's /dev/fuse). The
  // session's userdata must give back this object (see io_of below).
  void install(fuse_session* se, int fd);

  // True once a takeover's replayed INIT was processed and the kernel was
  // asked to resend what the previous run left unanswered.
  bool resumed() const;

 private:
  static ssize_t read(int fd, void* buf, size_t len, void* userdata);
  static ssize_t writev(int fd, struct iovec* iov, int count, void* userdata);
  // Replies whose bytes libfuse splices from a pipe (fuse_reply_data with
  // descriptors); without it libfuse never splices on a custom I/O.
  static ssize_t splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len, unsigned int flags,
                             void* userdata);

  std::function<void(std::string_view)> on_init_;
  std::string replay_;          // takeover: the INIT to hand libfuse first
  mutable std::mutex mutex_;
  std::condition_variable replayed_;
  bool replay_pending_ = false;  // not yet handed out
  bool replaying_ = false;       // handed out, reply not seen yet
  bool resumed_ = false;
  bool captured_ = false;        // fresh mount: INIT seen
};

// The session's SessionIo, from the userdata libfuse passes the I/O
// callbacks (the session's FuseContext; defined in fuse_ops.cpp).
SessionIo& io_of(void* userdata);
// Counts `bytes` of file data spliced into a reply (the session's metrics;
// defined in fuse_ops.cpp).
void count_spliced(void* userdata, size_t bytes);

}  // namespace sendense
