// A helper process that belongs to this daemon (qemu-nbd): started so that
// it can never outlive us, and ended and reaped by its owner.
//
// Why a dedicated spawner thread: PR_SET_PDEATHSIG fires when the *thread*
// that forked the child exits, not the process. FUSE worker threads come and
// go (libfuse retires idle ones), so a child forked from one would be killed
// the moment that thread retired. Every child is therefore forked by one
// thread that lives as long as the process; when the process dies (even by
// SIGKILL) that thread dies with it and the kernel SIGKILLs the children.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace sendense {

struct ChildSpec {
  std::string program;             // absolute path of the executable
  std::vector<std::string> argv;   // argv[0] included
  std::string output_path;         // stdout and stderr go to this file (created 0600)
};

class ChildProcess {
 public:
  // Starts the child: its own process group, PR_SET_PDEATHSIG(SIGKILL),
  // PR_SET_NO_NEW_PRIVS, stdin from /dev/null, every other fd closed.
  // Throws Error if it cannot be started (exec failure shows as an exit 127).
  explicit ChildProcess(const ChildSpec& spec);
  // Ends it (see terminate()).
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }

  // True while the child has not exited; reaps it if it has. Not thread-safe
  // (the owner calls it from one thread at a time).
  bool running();

  // "exited with status 1", "killed by signal 9" (after running() said no).
  std::string exit_description() const;

  // SIGTERM to its process group, up to `grace` to exit, then SIGKILL;
  // always reaps. Idempotent.
  void terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

  // The captured stdout/stderr (at most `limit` bytes, from the end).
  std::string output(size_t limit = 4096) const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  std::string output_path_;
};

// Finds `name` on $PATH (then /usr/bin, /usr/sbin); "" if absent.
std::string find_program(const std::string& name);

}  // namespace sendense
