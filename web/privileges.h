// The server child's confinement (web-spec.md "Process model"), applied once
// the mount root is open, TLS is loaded and the port is bound:
//   chroot(mountpoint) so no host file is in sight; setgroups none,
//   setresgid/setresuid to --user, keeping ONLY CAP_DAC_READ_SEARCH (it
//   reads every tenant's view through FUSE default_permissions; the mount is
//   read-only, so it still cannot write); bounding set emptied of the rest;
//   PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE 0, PR_SET_PDEATHSIG SIGKILL; and a
//   seccomp filter answering EPERM to open_by_handle_at and
//   name_to_handle_at (the CAP_DAC_READ_SEARCH escape out of a chroot),
//   exec, ptrace, mount and namespace calls, bpf, keyctl, module loading.
#pragma once

#include <sys/types.h>

#include <string>

namespace sendense::web {

struct TargetUser {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Looks `name` up in the passwd database (before the chroot hides it).
// Throws Error when unknown or when it is root.
TargetUser lookup_user(const std::string& name);

// Applies everything above, in order; throws Error naming the step that
// failed (the server must not serve then).
void confine_server(const std::string& chroot_dir, const TargetUser& user);

}  // namespace sendense::web
