#include "worker/probes.h"

#include <fcntl.h>
#include <linux/io_uring.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <vector>

#include "readers/common/error.h"
#include "worker/protocol.h"

namespace sendense::worker {

namespace {

// Raw system calls: the point is the call itself reaching the kernel, not
// what a libc wrapper might do first.
ProbeResult from_rc(long rc) {
  if (rc >= 0) return {ProbeOutcome::allowed, 0, "returned " + std::to_string(rc)};
  return {ProbeOutcome::refused, errno, ""};
}

ProbeResult memory() {
  rlimit as{};
  ::getrlimit(RLIMIT_AS, &as);
  if (as.rlim_cur == RLIM_INFINITY) return {ProbeOutcome::not_applied, 0, "no address-space limit (sanitizer build)"};
  const size_t want = static_cast<size_t>(as.rlim_cur) + (64u << 20);
  void* p = ::mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return {ProbeOutcome::refused, errno, "limit " + std::to_string(as.rlim_cur >> 20) + " MiB"};
  ::munmap(p, want);
  return {ProbeOutcome::allowed, 0, "mapped " + std::to_string(want >> 20) + " MiB"};
}

ProbeResult files() {
  std::vector<int> fds;
  ProbeResult r{ProbeOutcome::allowed, 0, ""};
  for (int i = 0; i < 100000; ++i) {
    const int fd = ::fcntl(kControlFd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      r = {ProbeOutcome::refused, errno, "after " + std::to_string(fds.size()) + " more"};
      break;
    }
    fds.push_back(fd);
  }
  if (r.outcome == ProbeOutcome::allowed) r.detail = "opened " + std::to_string(fds.size());
  for (int fd : fds) ::close(fd);
  return r;
}

}  // namespace

ProbeResult try_probe(std::string_view name) {
  if (name == "open") return from_rc(::syscall(SYS_openat, AT_FDCWD, "/etc/shadow", O_RDONLY));
  if (name == "open_by_handle") {
    // A file_handle header (handle_bytes, handle_type) and room for the handle.
    alignas(8) unsigned char handle[sizeof(file_handle) + 64] = {};
    const unsigned int bytes = 8;
    std::memcpy(handle, &bytes, sizeof bytes);
    return from_rc(::syscall(SYS_open_by_handle_at, kFirstImageFd, handle, O_RDONLY));
  }
  if (name == "execve") {
    const char* argv[] = {"/bin/sh", "-c", "true", nullptr};
    return from_rc(::syscall(SYS_execve, argv[0], argv, nullptr));
  }
  if (name == "socket") return from_rc(::syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
  if (name == "connect") return from_rc(::syscall(SYS_connect, kControlFd, nullptr, 0));
  if (name == "ptrace") return from_rc(::syscall(SYS_ptrace, PTRACE_ATTACH, 1, nullptr, nullptr));
  if (name == "kill") return from_rc(::syscall(SYS_kill, 1, 0));
  if (name == "setuid") return from_rc(::syscall(SYS_setuid, 0));
  if (name == "mount") return from_rc(::syscall(SYS_mount, "none", "/", "tmpfs", 0, nullptr));
  if (name == "unshare") return from_rc(::syscall(SYS_unshare, CLONE_NEWUSER));
  if (name == "bpf") return from_rc(::syscall(SYS_bpf, 0, nullptr, 0));
  if (name == "io_uring") {
    io_uring_params params{};
    return from_rc(::syscall(SYS_io_uring_setup, 8, &params));
  }
  if (name == "unlisted") return from_rc(::syscall(SYS_fchmod, kFirstImageFd, 0777));
  if (name == "write_image") return from_rc(::syscall(SYS_write, kFirstImageFd, "x", 1));
  if (name == "memory") return memory();
  if (name == "files") return files();
  throw Error(EINVAL, "no probe named " + std::string(name));
}

}  // namespace sendense::worker
