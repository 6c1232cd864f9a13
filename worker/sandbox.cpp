#include "worker/sandbox.h"

#include <execinfo.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>

#include "readers/common/error.h"
#include "readers/common/unique_fd.h"

namespace sendense::worker {

namespace {

// SIGSYS from the filter's default action: a call nobody listed. Says which
// (async-signal-safe: write and exit_group only) and ends the worker.
void on_sigsys(int, siginfo_t* info, void*) {
  char msg[96] = "sendense-restore-worker: seccomp: system call ";
  size_t n = std::strlen(msg);
  char digits[16];
  int d = 0;
  unsigned v = static_cast<unsigned>(info->si_syscall);
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && d < 15);
  while (d > 0 && n < sizeof msg - 16) msg[n++] = digits[--d];
  const char tail[] = " not allowed: worker ends\n";
  std::memcpy(msg + n, tail, sizeof tail - 1);
  n += sizeof tail - 1;
  [[maybe_unused]] ssize_t w = ::write(2, msg, n);
  void* frames[40];
  backtrace_symbols_fd(frames, backtrace(frames, 40), 2);
  ::syscall(SYS_exit_group, 159);
}

bool g_root_emptied = false;  // by leave_host_mounts()

// What glibc would open lazily, done while files can still be opened: the
// time zone (log lines format times).
void load_time_zone() {
  ::tzset();
  time_t now = ::time(nullptr);
  struct tm parts {};
  ::gmtime_r(&now, &parts);
  ::localtime_r(&now, &parts);
}

// An empty, read-only root: a tmpfs pivoted to / in our mount namespace.
void empty_root() {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) throw sys_error("mount --make-rprivate /");
  if (::mount("none", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=4,mode=0555") != 0)
    throw sys_error("mount tmpfs");
  if (::chdir("/tmp") != 0) throw sys_error("chdir to the empty root");
  if (::syscall(SYS_pivot_root, ".", ".") != 0) throw sys_error("pivot_root");
  if (::umount2(".", MNT_DETACH) != 0) throw sys_error("detach the old root");
  if (::chdir("/") != 0) throw sys_error("chdir /");
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    throw sys_error("remount the empty root read-only");
}

void drop_privileges(uint32_t uid, uint32_t gid) {
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) throw sys_error("drop bounding capability");
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (uid == 0) return;
  if (::syscall(SYS_setgroups, 0, nullptr) != 0) throw sys_error("setgroups");
  if (::syscall(SYS_setresgid, gid, gid, gid) != 0) throw sys_error("setresgid");
  if (::syscall(SYS_setresuid, uid, uid, uid) != 0) throw sys_error("setresuid");
  if (::syscall(SYS_setresuid, 0, 0, 0) == 0) throw Error(EPERM, "could regain uid 0 after dropping it");
}

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(static_cast<scmp_filter_ctx>(ctx)); }
};

// The allowlist as the kernel's BPF program. Compiling it (libseccomp) is
// most of the millisecond the sandbox costs; a spare does it while it waits.
std::vector<sock_filter> compile_filter() {
  std::unique_ptr<void, FilterDeleter> ctx(seccomp_init(SCMP_ACT_TRAP));
  if (!ctx) throw Error(ENOMEM, "seccomp_init failed");
  scmp_filter_ctx f = ctx.get();
  auto allow = [&](int nr) {
    if (const int rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 0); rc < 0) throw Error(-rc, "seccomp_rule_add");
  };
  for (int nr : {
           // reading passed descriptors, answering on the socket, logging
           SCMP_SYS(read), SCMP_SYS(pread64), SCMP_SYS(preadv), SCMP_SYS(readv), SCMP_SYS(write), SCMP_SYS(writev),
           SCMP_SYS(recvmsg), SCMP_SYS(recvfrom), SCMP_SYS(sendmsg), SCMP_SYS(sendto), SCMP_SYS(close),
           SCMP_SYS(fstat), SCMP_SYS(lseek), SCMP_SYS(fcntl), SCMP_SYS(dup),
           // read_files advises a window's extents of the passed images (filesystem.cpp)
           SCMP_SYS(fadvise64),
           // memory, threads, time, signals
           SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mprotect), SCMP_SYS(mremap), SCMP_SYS(madvise), SCMP_SYS(brk),
           SCMP_SYS(futex), SCMP_SYS(clone), SCMP_SYS(clone3), SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
           SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(tgkill),
           SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn), SCMP_SYS(sigaltstack),
           SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres), SCMP_SYS(gettimeofday), SCMP_SYS(time),
           SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity),
           SCMP_SYS(getrandom), SCMP_SYS(sysinfo), SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid),
           SCMP_SYS(getegid), SCMP_SYS(uname), SCMP_SYS(getrlimit)})
    allow(nr);
#if defined(__SANITIZE_ADDRESS__)
  // UBSan's vptr check probes memory through a pipe (sanitizer builds only).
  allow(SCMP_SYS(pipe));
  allow(SCMP_SYS(pipe2));
#endif
  // fstat() is newfstatat(fd, "", AT_EMPTY_PATH) in glibc: never a path.
  for (int nr : {SCMP_SYS(newfstatat), SCMP_SYS(statx)}) {
    const unsigned arg = nr == SCMP_SYS(newfstatat) ? 3 : 2;
    if (const int rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 1,
                                        scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH});
        rc < 0)
      throw Error(-rc, "seccomp_rule_add (fstatat)");
  }
  // prlimit(pid, resource, NULL, old): reading a limit only.
  if (const int rc = seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1, SCMP_A2(SCMP_CMP_EQ, 0)); rc < 0)
    throw Error(-rc, "seccomp_rule_add (prlimit64)");
  // What an attacker would want first: killed outright, no handler runs.
  for (int nr : {SCMP_SYS(open), SCMP_SYS(openat), SCMP_SYS(openat2), SCMP_SYS(creat), SCMP_SYS(open_by_handle_at),
                 SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(socket), SCMP_SYS(socketpair), SCMP_SYS(connect),
                 SCMP_SYS(bind), SCMP_SYS(listen), SCMP_SYS(accept), SCMP_SYS(accept4), SCMP_SYS(ptrace),
                 SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(mount), SCMP_SYS(umount2),
                 SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(unshare), SCMP_SYS(setns), SCMP_SYS(bpf),
                 SCMP_SYS(perf_event_open), SCMP_SYS(userfaultfd), SCMP_SYS(io_uring_setup), SCMP_SYS(keyctl),
                 SCMP_SYS(add_key), SCMP_SYS(request_key), SCMP_SYS(setuid), SCMP_SYS(setgid),
                 SCMP_SYS(setresuid), SCMP_SYS(setresgid), SCMP_SYS(setgroups), SCMP_SYS(kill)})
    if (const int rc = seccomp_rule_add(f, SCMP_ACT_KILL_PROCESS, nr, 0); rc < 0) throw Error(-rc, "seccomp_rule_add (kill)");
  // libseccomp 2.5 exports to a descriptor only: a memfd, no size limit.
  UniqueFd out(static_cast<int>(::syscall(SYS_memfd_create, "seccomp", MFD_CLOEXEC)));
  if (!out) throw sys_error("memfd_create for the seccomp filter");
  if (const int rc = seccomp_export_bpf(f, out.get()); rc < 0) throw Error(-rc, "seccomp_export_bpf");
  const off_t size = ::lseek(out.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0 || size > BPF_MAXINSNS * static_cast<off_t>(sizeof(sock_filter)))
    throw Error(EINVAL, "seccomp_export_bpf wrote " + std::to_string(size) + " bytes");
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  if (::pread(out.get(), program.data(), static_cast<size_t>(size), 0) != size) throw sys_error("read the seccomp filter");
  return program;
}

std::vector<sock_filter> g_filter;  // compiled ahead by prepare_filter()

void install_filter() {
  void* warm[2];
  backtrace(warm, 2);  // loads libgcc_s now: a backtrace later must not open it
  struct sigaction sa {};
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  ::sigaction(SIGSYS, &sa, nullptr);
  if (g_filter.empty()) g_filter = compile_filter();
  // What seccomp_load does: no_new_privs is set already (enter_sandbox).
  const sock_fprog prog{static_cast<unsigned short>(g_filter.size()), g_filter.data()};
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) throw sys_error("seccomp(SECCOMP_SET_MODE_FILTER)");
  std::vector<sock_filter>().swap(g_filter);
}

}  // namespace

void prepare_filter() {
  if (g_filter.empty()) g_filter = compile_filter();
}

void leave_host_mounts() {
  load_time_zone();
  // A namespace of its own whatever the daemon could clone it with: the
  // pivot below must never reach the host's.
  if (::unshare(CLONE_NEWNS) != 0) return;
  try {
    empty_root();
    g_root_emptied = true;
  } catch (const Error&) {
  }
}

std::vector<std::string> enter_sandbox(const SandboxOptions& options) {
  std::vector<std::string> missing;
  // glibc gives each thread's allocations their own arena, and the first
  // time such an arena shrinks it reads /proc/sys/vm/overcommit_memory: an
  // open the filter kills for, seen as SIGSYS in the middle of a large read
  // of a compressed qcow2 (sanitizer builds use their own allocator and
  // never showed it: their allocator refuses mallopt). One arena, the main
  // one, shrinks with brk only.
#if !defined(__SANITIZE_ADDRESS__)
  if (::mallopt(M_ARENA_MAX, 1) != 1) throw Error(EINVAL, "mallopt(M_ARENA_MAX, 1) failed");
#endif
  if (!g_root_emptied) {  // (a spare left the host's mounts before it waited)
    load_time_zone();
    if (!options.mount_namespace) {
      missing.push_back("empty root: no mount namespace");
    } else {
      try {
        empty_root();
      } catch (const Error& e) {
        missing.push_back(std::string("empty root: ") + e.what());
      }
    }
  }
  drop_privileges(options.uid, options.gid);
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw sys_error("PR_SET_DUMPABLE");
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) throw sys_error("RLIMIT_CORE");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw sys_error("PR_SET_NO_NEW_PRIVS");
#if defined(__SANITIZE_ADDRESS__)
  // ASan reserves terabytes of address space for its shadow: no RLIMIT_AS.
  missing.push_back("RLIMIT_AS: not applied in a sanitizer build");
#else
  if (options.memory_limit != 0) {
    const rlimit as{options.memory_limit, options.memory_limit};
    if (::setrlimit(RLIMIT_AS, &as) != 0) throw sys_error("RLIMIT_AS");
  }
#endif
  install_filter();
  return missing;
}

}  // namespace sendense::worker
