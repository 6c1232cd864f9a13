#include "worker/crash_report.h"

#include <execinfo.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace sendense::worker {

namespace {

char g_backup[128];

// Async-signal-safe formatting: write(2) of fixed buffers only.
void put(char* buf, size_t& n, size_t cap, const char* s) {
  while (*s && n + 1 < cap) buf[n++] = *s++;
}
void put_number(char* buf, size_t& n, size_t cap, unsigned long v) {
  char digits[24];
  int d = 0;
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && d < 23);
  while (d > 0 && n + 1 < cap) buf[n++] = digits[--d];
}

// Unsanitized: the sanitizers would report these deliberate faults (and
// their reports open files, which the filter forbids).
[[noreturn]] __attribute__((no_sanitize("address", "undefined"))) void die_by(int sig) {
  // The handler is reset (SA_RESETHAND): a fault now is forced on us with
  // the default action, which ends even a namespace's pid 1.
  switch (sig) {
    case SIGSEGV:
    {
      volatile uintptr_t first_page = 8;  // never mapped (vm.mmap_min_addr); volatile: no compile-time fault
      *reinterpret_cast<volatile char*>(first_page) = 0;
      break;
    }
    case SIGILL:
      __builtin_trap();
    case SIGFPE: {
      volatile int zero = 0;
      volatile int x = 1 / zero;
      (void)x;
      break;
    }
    default:
      break;
  }
  ::syscall(SYS_exit_group, 128 + sig);  // no fault raises it: the exit status says which
  __builtin_unreachable();
}

void on_fatal(int sig, siginfo_t* info, void*) {
  char msg[256];
  size_t n = 0;
  put(msg, n, sizeof msg, "sendense-restore-worker: backup ");
  put(msg, n, sizeof msg, g_backup);
  put(msg, n, sizeof msg, ": fatal signal ");
  put_number(msg, n, sizeof msg, static_cast<unsigned long>(sig));
  put(msg, n, sizeof msg, " (");
  put(msg, n, sizeof msg, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
  const bool sent = info->si_code <= 0;  // SI_USER, SI_TKILL, SI_QUEUE: from a process, not a fault
  if (sent) {
    put(msg, n, sizeof msg, ") sent by pid ");
    put_number(msg, n, sizeof msg, static_cast<unsigned long>(info->si_pid));  // 0: from outside our namespace
  } else {
    put(msg, n, sizeof msg, ") at address 0x");
    char hex[20];
    int d = 0;
    auto a = reinterpret_cast<uintptr_t>(info->si_addr);
    do {
      hex[d++] = "0123456789abcdef"[a & 15];
      a >>= 4;
    } while (a != 0 && d < 19);
    while (d > 0 && n + 1 < sizeof msg) msg[n++] = hex[--d];
  }
  put(msg, n, sizeof msg, ": worker ends\n");
  [[maybe_unused]] ssize_t w = ::write(2, msg, n);
  void* frames[40];
  backtrace_symbols_fd(frames, backtrace(frames, 40), 2);
  if (!sent) return;  // the faulting instruction runs again, now with the default action
  die_by(sig);
}

}  // namespace

void install_crash_report(const std::string& backup_id) {
  std::strncpy(g_backup, backup_id.c_str(), sizeof g_backup - 1);
  void* warm[2];
  backtrace(warm, 2);  // loads libgcc_s now, before the sandbox forbids opening it
  struct sigaction sa {};
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) ::sigaction(sig, &sa, nullptr);
}

}  // namespace sendense::worker
