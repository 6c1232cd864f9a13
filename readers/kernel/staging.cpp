#include "readers/kernel/staging.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/kernel/loop_device.h"

namespace sendense::kernel {

namespace {

constexpr int kUnmountAttempts = 5;
constexpr auto kUnmountPause = std::chrono::milliseconds(200);

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 && std::all_of(oct.begin(), oct.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::vector<std::string> mount_points() {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, point;
    if (fields >> id >> parent >> devno >> root >> point) out.push_back(unescape_mountinfo(point));
  }
  return out;
}

void remove_tree_without_mounts(const std::string& dir, int depth) {
  if (depth > 8) return;  // our layout is two levels deep
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::pair<std::string, bool>> entries;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    entries.emplace_back(dir + "/" + name, e->d_type == DT_DIR);
  }
  ::closedir(d);
  for (const auto& [path, is_dir] : entries) {
    if (is_mounted(path)) continue;  // never recurse into what is still mounted
    if (is_dir) {
      remove_tree_without_mounts(path, depth + 1);
      ::rmdir(path.c_str());
    } else {
      ::unlink(path.c_str());
    }
  }
}

}  // namespace

std::string staging_base() {
  if (const char* b = ::getenv("SENDENSE_STAGING_BASE"); b && b[0] == '/') return b;
  return "/run/sendense-restore";
}

void make_private_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) throw sys_error("mkdir", path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) throw sys_error("stat", path);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    throw Error(EPERM, "not a folder owned by us (refusing to stage there)", path);
  if ((st.st_mode & 07777) != 0700 && ::chmod(path.c_str(), 0700) != 0) throw sys_error("chmod 0700", path);
}

void mount_readonly(const std::string& device, const std::string& dir, const std::string& fs_type,
                    const std::string& options) {
  const unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  if (::mount(device.c_str(), dir.c_str(), fs_type.c_str(), flags, options.empty() ? nullptr : options.c_str()) !=
      0)
    throw sys_error("mount -t " + fs_type + " -o ro,nosuid,nodev,noexec" + (options.empty() ? "" : "," + options) +
                        " " + device,
                    dir);
}

bool is_mounted(const std::string& dir) {
  const auto points = mount_points();
  return std::find(points.begin(), points.end(), dir) != points.end();
}

bool unmount(const std::string& dir) {
  for (int attempt = 0; attempt < kUnmountAttempts; ++attempt) {
    if (::umount2(dir.c_str(), UMOUNT_NOFOLLOW) == 0) return true;
    if (errno == EINVAL || errno == ENOENT) return !is_mounted(dir);  // not (or no longer) a mount point
    if (errno != EBUSY) break;
    std::this_thread::sleep_for(kUnmountPause);
  }
  log::warn("umount_lazy", {{"dir", dir}, {"error", std::strerror(errno)}});
  if (::umount2(dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
    log::error("umount_failed", {{"dir", dir}, {"error", std::strerror(errno)}});
    return false;
  }
  return true;
}

void remove_staging_dir(const std::string& dir) {
  remove_tree_without_mounts(dir, 0);
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT)
    log::error("rmdir_failed", {{"dir", dir}, {"error", std::strerror(errno)}});
}

void release_stale_staging(const std::string& mount_id) {
  if (mount_id.empty() || mount_id.find('/') != std::string::npos || mount_id == "." || mount_id == "..") return;
  const std::string base = staging_base() + "/" + mount_id;
  std::vector<std::string> ours;
  for (const auto& p : mount_points())
    if (p.rfind(base + "/", 0) == 0) ours.push_back(p);
  // Newest first (mountinfo lists in mount order): a volume's mount sits on
  // a loop device over an export file mounted before it.
  std::reverse(ours.begin(), ours.end());
  for (const auto& p : ours) {
    log::info("reconciled_mount", {{"dir", p}});
    if (::umount2(p.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
      log::error("umount_failed", {{"dir", p}, {"error", std::strerror(errno)}});
  }
  release_tagged_loops(kLoopTagPrefix + mount_id);
  struct stat st {};
  if (::lstat(base.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) remove_staging_dir(base);
}

}  // namespace sendense::kernel
