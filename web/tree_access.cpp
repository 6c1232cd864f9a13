#include "web/tree_access.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>

#include "readers/common/error.h"
#include "web/api_error.h"

namespace sendense::web {
namespace {

constexpr long kFuseSuperMagic = 0x65735546;

int openat2_raw(int dirfd, const char* path, uint64_t flags, uint64_t resolve) {
  struct open_how how {};
  how.flags = flags | O_CLOEXEC;
  how.resolve = resolve;
  // glibc 2.36 has no wrapper.
  return static_cast<int>(::syscall(SYS_openat2, dirfd, path, &how, sizeof how));
}

constexpr uint64_t kBeneath = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

std::string read_link(int dirfd, const char* name) {
  std::string buf(4096, '\0');
  ssize_t n = ::readlinkat(dirfd, name, buf.data(), buf.size());
  if (n < 0) return {};
  buf.resize(static_cast<size_t>(n));
  return buf;
}

}  // namespace

std::string entry_type(mode_t mode) {
  if (S_ISREG(mode)) return "file";
  if (S_ISDIR(mode)) return "dir";
  if (S_ISLNK(mode)) return "symlink";
  return "other";
}

bool TreeAccess::tree_is_up() const {
  struct statfs sf {};
  return ::fstatfs(root_.get(), &sf) == 0 && sf.f_type == kFuseSuperMagic;
}

UniqueFd TreeAccess::open_scope(const std::optional<std::string>& tenant) const {
  const std::string path = tenant ? "tenants/" + *tenant : ".";
  if (tenant && (tenant->empty() || tenant->find('/') != std::string::npos || *tenant == "." || *tenant == ".."))
    throw not_found();
  // The tenant comes from an authenticated token: a missing folder means the
  // daemon has not read the catalog since the tenant was added.
  int fd = openat2_raw(root_.get(), path.c_str(), O_PATH | O_DIRECTORY, kBeneath);
  if (fd < 0) throw ApiError(503, "unavailable", "the tenant's view is not mounted yet");
  UniqueFd scope(fd);
  // The tenant's view must be a FUSE mount of its own, not the empty folder
  // left when the daemon is gone, nor the operator tree's placeholder folder
  // before the daemon has mounted the view (a tenant just added, a start):
  // both are "not yet", never "no such backup".
  struct statfs sf {};
  if (::fstatfs(scope.get(), &sf) != 0 || sf.f_type != kFuseSuperMagic)
    throw ApiError(503, "unavailable", "the restore tree is not mounted");
  struct stat scope_st {}, root_st {};
  if (tenant && (::fstat(scope.get(), &scope_st) != 0 || ::fstat(root_.get(), &root_st) != 0 ||
                 scope_st.st_dev == root_st.st_dev))
    throw ApiError(503, "unavailable", "the tenant's view is not mounted yet");
  return scope;
}

UniqueFd TreeAccess::open_backup(int scope_fd, const std::string& id, bool tenant_scope) const {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos ||
      id.find('\0') != std::string::npos)
    throw not_found();
  int fd = openat2_raw(scope_fd, id.c_str(), O_PATH | O_DIRECTORY,
                       kBeneath | (tenant_scope ? RESOLVE_NO_XDEV : 0));
  if (fd < 0) throw not_found();
  return UniqueFd(fd);
}

UniqueFd TreeAccess::open_beneath(int base_fd, const std::string& path, int flags) {
  const std::string rel = path.empty() ? "." : path;
  int fd = openat2_raw(base_fd, rel.c_str(), static_cast<uint64_t>(flags), kBeneath | RESOLVE_NO_XDEV);
  if (fd < 0) throw not_found();
  return UniqueFd(fd);
}

std::string relative_api_path(const std::string& path) {
  if (path.find('\0') != std::string::npos) throw bad_request("the path holds a NUL byte");
  size_t start = path.find_first_not_of('/');
  if (start == std::string::npos) return "";
  std::string rel = path.substr(start);
  while (!rel.empty() && rel.back() == '/') rel.pop_back();
  return rel;
}

EntryInfo stat_entry(int dir_fd, const std::string& name) {
  EntryInfo e;
  e.name = name;
  if (::fstatat(dir_fd, name.c_str(), &e.st, AT_SYMLINK_NOFOLLOW) != 0) throw not_found();
  e.type = entry_type(e.st.st_mode);
  if (S_ISLNK(e.st.st_mode)) e.target = read_link(dir_fd, name.c_str());
  return e;
}

EntryInfo stat_fd(int fd, const std::string& name) {
  EntryInfo e;
  e.name = name;
  if (::fstatat(fd, "", &e.st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) throw not_found();
  e.type = entry_type(e.st.st_mode);
  if (S_ISLNK(e.st.st_mode)) e.target = read_link(fd, "");
  return e;
}

std::vector<EntryInfo> list_folder(int dir_fd) {
  // Reopen the O_PATH descriptor for reading: fdopendir needs one.
  int rfd = openat2_raw(dir_fd, ".", O_RDONLY | O_DIRECTORY, kBeneath | RESOLVE_NO_XDEV);
  if (rfd < 0) throw not_found();
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(rfd), ::closedir);
  if (!dir) {
    ::close(rfd);
    throw not_found();
  }
  std::vector<std::string> names;
  while (struct dirent* d = ::readdir(dir.get())) {
    std::string n = d->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  std::sort(names.begin(), names.end());
  std::vector<EntryInfo> out;
  out.reserve(names.size());
  for (const auto& n : names) {
    try {
      out.push_back(stat_entry(::dirfd(dir.get()), n));
    } catch (const ApiError&) {
      // vanished between readdir and stat (a detach): leave it out
    }
  }
  return out;
}

}  // namespace sendense::web
