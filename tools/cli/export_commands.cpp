// export samba / export ganesha: the share or export stanza of the restore
// tree or of one tenant's view, on stdout (text: export_stanza.h).
#include <grp.h>
#include <pwd.h>

#include <filesystem>
#include <iostream>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/export_stanza.h"
#include "tools/daemon/config.h"

namespace sendense::cli {

namespace {

std::string user_name(uint32_t uid, const std::string& tenant) {
  errno = 0;
  const passwd* pw = ::getpwuid(uid);
  if (!pw)
    throw Error(errno ? errno : ENOENT,
                "uid " + std::to_string(uid) + " of tenant " + tenant +
                    " has no passwd entry: Samba's force user needs an account (useradd, or re-add the tenant "
                    "with an existing --uid)");
  return pw->pw_name;
}

std::string group_name(uint32_t gid, const std::string& tenant) {
  errno = 0;
  const group* gr = ::getgrgid(gid);
  if (!gr)
    throw Error(errno ? errno : ENOENT,
                "gid " + std::to_string(gid) + " of tenant " + tenant +
                    " has no group entry: Samba's force group needs a group (groupadd, or re-add the tenant "
                    "with an existing --gid)");
  return gr->gr_name;
}

// The target of the stanza: the whole tree, or the tenant named by --tenant.
ExportTarget target_of(const Args& args, bool samba) {
  ExportTarget t;
  const std::string mountpoint = mountpoint_of(args);
  const auto tenant = args.value("--tenant");
  if (!tenant) {
    t.path = export_path(mountpoint, "");
    return t;
  }
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const TenantRecord rec = require_tenant(catalog, *tenant);
  // A customer's session must not run as root: the tenant needs its owner.
  if (!rec.uid || !rec.gid)
    throw Error(EINVAL,
                "tenant " + rec.name + " has no " + (rec.uid ? "gid" : "uid") +
                    ": its customers would read as root; re-add it with --uid N --gid N (an unprivileged account)",
                db);
  t.tenant = rec.name;
  t.num = rec.num;
  t.uid = *rec.uid;
  t.gid = *rec.gid;
  t.path = export_path(mountpoint, rec.name);
  if (samba) {
    t.user = user_name(t.uid, rec.name);
    t.group = group_name(t.gid, rec.name);
  }
  return t;
}

}  // namespace

std::string daemon_setting(const Args& args, const std::string& key) {
  const auto given = args.value("--config");
  const std::string file = given.value_or(config::kDefaultConfigPath);
  std::error_code ec;
  if (!given && !std::filesystem::exists(file, ec)) return "";
  config::DaemonConfig conf;
  try {
    conf.load_file(file);
  } catch (const config::ConfigError& e) {
    throw Error(EINVAL, e.what());
  }
  for (const auto& [k, setting] : conf.effective())
    if (k == key) return setting.value;
  return "";
}

std::string mountpoint_of(const Args& args) {
  if (auto m = args.value("--mountpoint")) return *m;
  const std::string m = daemon_setting(args, "mountpoint");
  return m.empty() ? kDefaultMountpoint : m;
}

int export_samba(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--tenant", "--mountpoint", "--config", "--catalog"}, {"--global"});
  expect_positionals(args, {});
  if (args.flag("--global")) {
    if (args.value("--tenant") || args.value("--mountpoint"))
      throw UsageError("--global prints the [global] lines only: no --tenant or --mountpoint");
    std::cout << samba_global();
    return 0;
  }
  std::cout << samba_share(target_of(args, true));
  return 0;
}

int export_ganesha(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--tenant", "--mountpoint", "--config", "--catalog"}, {});
  expect_positionals(args, {});
  std::cout << ganesha_export(target_of(args, false));
  return 0;
}

}  // namespace sendense::cli
