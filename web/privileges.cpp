#include "web/privileges.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <seccomp.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <memory>

#include "readers/common/error.h"

namespace sendense::web {
namespace {

void install_seccomp() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) throw Error(ENOMEM, "seccomp_init failed");
  std::unique_ptr<void, void (*)(void*)> guard(ctx, [](void* c) { seccomp_release(c); });
  static const char* const refused[] = {
      "open_by_handle_at", "name_to_handle_at", "execve",     "execveat",   "ptrace",         "process_vm_readv",
      "process_vm_writev", "mount",             "umount2",    "chroot",     "pivot_root",     "unshare",
      "setns",             "bpf",               "keyctl",     "add_key",    "request_key",    "init_module",
      "finit_module",      "delete_module",     "kexec_load", "kexec_file_load", "reboot",     "swapon",
      "swapoff",           "perf_event_open",   "userfaultfd", "fsopen",    "fsmount",        "fsconfig",
      "move_mount",        "open_tree",         "mount_setattr", "setuid",  "setgid",         "setreuid",
      "setregid",          "setresuid",         "setresgid",  "setgroups",  "capset",         "personality",
      "acct",              "quotactl",          "syslog",     "iopl",       "ioperm",         "settimeofday",
      "clock_settime",     "adjtimex",          "sethostname", "setdomainname", "lookup_dcookie", "vhangup",
  };
  for (const char* name : refused) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0) != 0)
      throw Error(EINVAL, std::string("seccomp rule for ") + name + " failed");
  }
  if (int r = seccomp_load(ctx); r != 0) throw Error(-r, "seccomp_load failed");
}

void keep_only_dac_read_search() {
  // Empty the bounding set of everything else (needs CAP_SETPCAP: still root).
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
    if (cap == CAP_DAC_READ_SEARCH) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) throw sys_error("PR_CAPBSET_DROP");
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    throw sys_error("PR_CAP_AMBIENT_CLEAR_ALL");
}

void set_caps(const char* text) {
  cap_t caps = cap_from_text(text);
  if (!caps) throw sys_error("cap_from_text");
  int r = cap_set_proc(caps);
  int err = errno;
  cap_free(caps);
  if (r != 0) throw Error(err, "cap_set_proc", text);
}

}  // namespace

TargetUser lookup_user(const std::string& name) {
  errno = 0;
  struct passwd* pw = ::getpwnam(name.c_str());
  if (!pw) throw Error(errno ? errno : ENOENT, "no such user", name);
  if (pw->pw_uid == 0 || pw->pw_gid == 0) throw Error(EPERM, "refusing to serve as a root user or group", name);
  return {pw->pw_uid, pw->pw_gid};
}

void confine_server(const std::string& chroot_dir, const TargetUser& user) {
  if (::chroot(chroot_dir.c_str()) != 0) throw sys_error("chroot", chroot_dir);
  if (::chdir("/") != 0) throw sys_error("chdir /");
  keep_only_dac_read_search();
  // Keep the permitted set across the uid change, then pick from it.
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) throw sys_error("PR_SET_KEEPCAPS");
  if (::setgroups(0, nullptr) != 0) throw sys_error("setgroups");
  if (::setresgid(user.gid, user.gid, user.gid) != 0) throw sys_error("setresgid");
  if (::setresuid(user.uid, user.uid, user.uid) != 0) throw sys_error("setresuid");
  set_caps("cap_dac_read_search=ep");
  if (::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) throw sys_error("PR_SET_KEEPCAPS 0");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw sys_error("PR_SET_NO_NEW_PRIVS");
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw sys_error("PR_SET_DUMPABLE");
  // The uid change cleared any earlier parent-death signal: set it now, and
  // check the broker did not die before.
  const pid_t parent = ::getppid();
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) throw sys_error("PR_SET_PDEATHSIG");
  if (parent == 1) throw Error(ESRCH, "the broker is gone");
  // The uid change cannot be undone (checked before seccomp refuses setuid anyway).
  if (::setuid(0) == 0) throw Error(EPERM, "could regain root after dropping privileges");
  install_seccomp();
}

}  // namespace sendense::web
