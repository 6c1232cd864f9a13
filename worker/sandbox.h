// The worker's own half of the sandbox (issue 10), applied after it has
// its descriptors and before it reads a byte of the backup. The daemon's
// half (namespaces, no_new_privs, RLIMIT_NOFILE/CORE/CPU, a closed set of
// descriptors) is applied in the child before exec (fuse/worker_client.cpp).
//
//   1. an empty root: in the mount namespace the daemon gave it, a
//      read-only empty tmpfs becomes / (pivot_root; the old root detached);
//   2. no capabilities: the bounding and ambient sets are emptied, then
//      setgroups(0), setresgid/setresuid to the per-worker id: the
//      permitted and effective sets go with uid 0;
//   3. not dumpable (no core, /proc/PID owned by root), RLIMIT_AS;
//   4. a seccomp allowlist: what reading through passed descriptors and
//      answering on the socket needs. open/openat/execve/socket/connect/
//      ptrace/mount/... kill the process; anything else not listed raises
//      SIGSYS, which logs the call's number and ends the process.
// Each step that the host refuses (no mount namespace) is reported in
// `missing`; steps 2-4 failing is fatal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sendense::worker {

struct SandboxOptions {
  uint32_t uid = 0, gid = 0;   // 0: keep (not root: tests)
  uint64_t memory_limit = 0;   // RLIMIT_AS; 0: none (sanitizer builds: never)
  bool mount_namespace = false; // started in a new mount namespace (else no empty root)
};

// Throws Error when a mandatory step fails. Returns what could not be done.
std::vector<std::string> enter_sandbox(const SandboxOptions& options);

// Step 1 ahead, for a spare (worker/spare.h), which may wait hours for a
// backup: in the mount namespace it was cloned into it would keep a copy of
// every mount the host had then (the tree, tenants' views, repositories,
// the kernel backend's mounts), and an umount of one of them on the host
// would not end its filesystem: the tree unmounted under the daemon did
// not end the daemon. Unshares a mount namespace first, so it is never the
// host's root it pivots. When it cannot, enter_sandbox does step 1 as for
// any worker (and reports what failed).
void leave_host_mounts();

// Step 4's program compiled ahead, for a spare: libseccomp's compile is
// most of the millisecond the sandbox adds to an attach. enter_sandbox
// loads it (or compiles it then, for a worker started for its backup).
void prepare_filter();

}  // namespace sendense::worker
