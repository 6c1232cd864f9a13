// Every path the server opens, opened beneath the caller's folder of the
// FUSE tree with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS): `..`, absolute paths and guest symlinks cannot
// leave it. Scope: `tenants/<name>` for a tenant, the root for the operator.
// A tenant's view is one mount, so beneath it RESOLVE_NO_XDEV holds too; a
// backup folder is always one mount, so paths inside one never cross.
//
// Every failure to resolve (ENOENT, ELOOP, EXDEV, ENOTDIR, EACCES, ...) is
// the same 404 `not_found`: which one it was is not told.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "readers/common/unique_fd.h"

namespace sendense::web {

// One directory entry as the API shows it.
struct EntryInfo {
  std::string name;
  std::string type;       // file, dir, symlink, other
  struct stat st {};
  std::string target;     // symlink only
};

class TreeAccess {
 public:
  // `root`: the mount root opened O_PATH|O_DIRECTORY before the chroot.
  explicit TreeAccess(UniqueFd root) : root_(std::move(root)) {}

  // fstatfs(root).f_type is FUSE's: false when the daemon is gone (the
  // chroot then shows the empty folder under the mount).
  bool tree_is_up() const;

  // The caller's folder (tenant nullopt = the operator's root).
  UniqueFd open_scope(const std::optional<std::string>& tenant) const;

  // <id> inside the scope: one name, never a symlink (by-vm/ links are not
  // backups). Throws ApiError 404.
  UniqueFd open_backup(int scope_fd, const std::string& id, bool tenant_scope) const;

  // `path` ("/part1/etc", "" = the backup folder itself) beneath `base`.
  // O_PATH|O_NOFOLLOW with `flags` O_PATH returns a symlink itself.
  static UniqueFd open_beneath(int base_fd, const std::string& path, int flags);

 private:
  UniqueFd root_;
};

// The API's path checked and made relative: NUL bytes refused (400),
// leading slashes dropped, "" for the folder itself.
std::string relative_api_path(const std::string& path);

// The entry `name` of the folder `dir_fd` (never followed).
EntryInfo stat_entry(int dir_fd, const std::string& name);

// An open file or symlink (O_PATH|O_NOFOLLOW) itself: `name` for its name.
EntryInfo stat_fd(int fd, const std::string& name);

// Every entry of the folder, sorted by name (bytewise); "." and ".." left out.
std::vector<EntryInfo> list_folder(int dir_fd);

std::string entry_type(mode_t mode);

}  // namespace sendense::web
