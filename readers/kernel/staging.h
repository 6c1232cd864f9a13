// Staging mounts of the kernel backend: each attached backup gets a private
// folder /run/sendense-restore/<mount-id>/ (root-only) holding its image
// exports, throwaway overlays and one mount point per volume. Everything
// mounted there is ro,nosuid,nodev,noexec.
#pragma once

#include <string>

namespace sendense::kernel {

// "/run/sendense-restore" ($SENDENSE_STAGING_BASE overrides it, for tests
// that must not disturb a running daemon's folder).
std::string staging_base();

// Creates `path` as a 0700 folder owned by us; an existing one must be a
// real folder (not a symlink) owned by us. Throws Error.
void make_private_dir(const std::string& path);

// mount(2) with MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC plus `options`
// ("noload", "nouuid", ...). Throws Error naming the device and folder.
void mount_readonly(const std::string& device, const std::string& dir, const std::string& fs_type,
                    const std::string& options);

// Unmounts `dir`: a few retries while busy, then a lazy unmount. Logs each
// failure; never throws. True if nothing stays mounted on `dir`.
bool unmount(const std::string& dir);

// Removes `dir` and what it holds, skipping (and keeping) anything still
// mounted. Never throws.
void remove_staging_dir(const std::string& dir);

// True if `dir` is a mount point (from /proc/self/mountinfo).
bool is_mounted(const std::string& dir);

// Start-up reconciliation for one restore_mounts row of a dead run:
// unmounts everything below <base>/<mount-id> (deepest first), detaches
// loop devices tagged with that mount id and removes the folder. Its
// qemu-storage-daemon died with the run (PR_SET_PDEATHSIG). Logs what it
// released; never throws.
void release_stale_staging(const std::string& mount_id);

}  // namespace sendense::kernel
