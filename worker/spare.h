// A spare worker's own steps (worker/protocol.h, kSpareFlag): started
// ahead of any backup, it has only its socket until the setup brings the
// image descriptors, and only a placeholder name until it takes the
// backup's. All of it runs before the sandbox (worker/sandbox.h).
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

namespace sendense::worker {

// Whether it will be able to take a name (take_name): a kernel without
// PR_SET_MM_MAP could not give it one. Found before the spare says it is
// ready (the daemon then stops making spares). Reads /proc: before the
// spare leaves the host's mounts. Throws Error.
void check_name_can_change();

// Tells the daemon the spare is up (exec'd, linked, waiting). Throws Error.
void say_ready();

// The descriptors an SCM_RIGHTS message carried (received with `m`).
// Throws Error when the control data was cut (more than the room given).
std::vector<int> passed_descriptors(const msghdr& m);

// Moves `fds` to kFirstImageFd, kFirstImageFd + 1, ... in order (wherever
// they were received) and sets RLIMIT_NOFILE as the daemon does for a
// worker it starts with its images. Throws Error.
void place_image_descriptors(const std::vector<int>& fds);

// Writes `backup_id` over the placeholder in the command line (argv[1..])
// and ends the command line there, so /proc/PID/cmdline reads
// "<binary>\0<backup_id>\0" (PR_SET_MM_MAP). Throws Error when the id does
// not fit or the kernel refuses.
void take_name(char** argv, const std::string& backup_id);

}  // namespace sendense::worker
