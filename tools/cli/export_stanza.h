// The text of a Samba share and of an NFS-Ganesha export of the restore
// tree (the operator's) or of one tenant's view, for `sendense-restore export`.
// Pure text: no catalog, no passwd lookups (export_commands.cpp does those).
//
// Export ids are stable: 1000 + the tenant's num (permanent in the catalog,
// never reused), 1000 for the operator's tree (num 0). Ganesha's Export_Id
// is 16-bit, so kMaxTenantNum (catalog.h) keeps every tenant's id valid.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace sendense::cli {

inline constexpr int64_t kExportIdBase = 1000;
// Major half of every Filesystem_Id we print: "send" in ASCII. The minor
// half is the export id, so each export has its own.
inline constexpr uint64_t kFilesystemIdMajor = 0x73656e64;
// The default mount point (packaging/restorefs.conf) when neither
// --mountpoint nor the daemon's configuration names one.
inline constexpr const char* kDefaultMountpoint = "/mnt/sendense/restore";

// What one stanza serves.
struct ExportTarget {
  std::string tenant;          // "" = the operator's whole tree
  int64_t num = 0;             // the tenant's num (0 for the operator)
  std::string path;            // the directory served: the mount point, or <mountpoint>/tenants/<tenant>
  // Tenants only: every client session acts as this owner (the owner the
  // tenant's view shows), by name for Samba, by number for ganesha.
  uint32_t uid = 0, gid = 0;
  std::string user, group;     // names of uid/gid (Samba's force user/group)
};

// 1000 + num; Error(ERANGE) when it does not fit ganesha's 16 bits.
uint16_t export_id(int64_t num);

// `mountpoint` checked (absolute, no quote, backslash, newline, '#' or ';'
// that would end a value in either config language) and without a trailing
// '/'; the tenant's path when `tenant` is not "". Error(EINVAL) naming it.
std::string export_path(const std::string& mountpoint, const std::string& tenant);

// [sendense-<tenant>] or [sendense-restore], every line commented.
std::string samba_share(const ExportTarget& t);
// The [global] lines the shares rely on (sendense-restore export samba --global).
std::string samba_global();
// EXPORT { ... } with FSAL VFS, every line commented.
std::string ganesha_export(const ExportTarget& t);

}  // namespace sendense::cli
