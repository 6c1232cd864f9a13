// tenant add / assign / unassign / list / remove: the customers that own VMs
// and whose views are tenants/<NAME>/ (catalog/catalog.h, TenantRecord).
#include <strings.h>

#include <algorithm>
#include <charconv>
#include <iostream>
#include <nlohmann/json.hpp>
#include <map>
#include <set>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/format.h"

namespace sendense::cli {

namespace {

// --uid / --gid: a decimal id below 4294967295 ((uid_t)-1 means "no id").
std::optional<uint32_t> id_option(const Args& args, const std::string& name) {
  const auto v = args.value(name);
  if (!v) return std::nullopt;
  uint32_t id = 0;
  const char* end = v->data() + v->size();
  const auto [ptr, ec] = std::from_chars(v->data(), end, id);
  if (v->empty() || ec != std::errc() || ptr != end || id == 4294967295u)
    throw UsageError(name + " must be a number from 0 to 4294967294, not '" + *v + "'");
  return id;
}

std::string id_text(const std::optional<uint32_t>& id) { return id ? std::to_string(*id) : "-"; }

// The tenant named `name` (as the catalog matches it: ignoring case), or
// Error(ENOENT) naming it and the catalog.
TenantRecord find_tenant(Catalog& catalog, const std::string& name) {
  for (TenantRecord& t : catalog.list_tenants())
    if (strcasecmp(t.name.c_str(), name.c_str()) == 0) return std::move(t);
  throw Error(ENOENT, "no tenant '" + name + "' in the catalog (add it with: sendense-restore tenant add " + name + ")",
              catalog.path());
}

}  // namespace

TenantRecord require_tenant(Catalog& catalog, const std::string& name) { return find_tenant(catalog, name); }

std::vector<std::string> assign_vms(Catalog& catalog, const std::string& tenant, const std::vector<std::string>& vms) {
  const TenantRecord t = find_tenant(catalog, tenant);
  // Every VM is checked before any is assigned, so a refused list changes nothing.
  std::map<std::string, std::string> owner;
  for (const TenantRecord& other : catalog.list_tenants())
    for (const std::string& vm : other.vms) owner[vm] = other.name;
  for (const std::string& vm : vms) {
    // The catalog's own check (a VM name is a folder name), made before any row changes.
    if (vm.empty() || vm == "." || vm == ".." || vm.find('/') != std::string::npos)
      throw Error(EINVAL, "invalid vm name '" + vm + "' (must be a non-empty file name); nothing assigned",
                  catalog.path());
    auto it = owner.find(vm);
    if (it != owner.end() && it->second != t.name)
      throw Error(EBUSY, "vm '" + vm + "' is owned by tenant '" + it->second + "' (unassign it there first); nothing assigned",
                  catalog.path());
  }
  std::vector<std::string> newly;
  for (const std::string& vm : vms) {
    if (owner.contains(vm)) continue;  // already this tenant's
    catalog.assign_vm(t.name, vm);
    owner[vm] = t.name;
    newly.push_back(vm);
  }
  return newly;
}

int tenant_add(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--uid", "--gid", "--catalog"}, {});
  expect_positionals(args, {"NAME"});
  const auto uid = id_option(args, "--uid");
  const auto gid = id_option(args, "--gid");
  const std::string& name = args.positional[0];
  if (!valid_tenant_name(name))
    throw UsageError("tenant name '" + name + "' must be 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit");
  Catalog catalog(args.value_or("--catalog", kDefaultCatalog));
  const TenantRecord t = catalog.add_tenant(name, uid, gid);
  std::cout << "added tenant " << t.name << " (num " << t.num << ", uid " << (uid ? std::to_string(*uid) : "0 (unset)")
            << ", gid " << (gid ? std::to_string(*gid) : "0 (unset)") << ")\n";
  return 0;
}

int tenant_assign(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--vm", "--catalog"}, {}, {"--vm"});
  expect_positionals(args, {"NAME"});
  const std::vector<std::string> vms = args.all("--vm");
  if (vms.empty()) throw UsageError("missing --vm");
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const TenantRecord t = find_tenant(catalog, args.positional[0]);
  const std::vector<std::string> newly = assign_vms(catalog, t.name, vms);
  std::set<std::string> with_backups;
  for (const BackupRecord& b : catalog.list_backups()) with_backups.insert(b.vm);
  for (const std::string& vm : vms) {
    const bool is_new = std::find(newly.begin(), newly.end(), vm) != newly.end();
    std::cout << (is_new ? "assigned " : "already  ") << vm << " to " << t.name << "\n";
    // Assigning before the first import is normal; say so, a typo looks the same.
    if (!with_backups.contains(vm)) std::cerr << "sendense-restore: note: vm '" << vm << "' has no backups in the catalog yet\n";
  }
  return 0;
}

int tenant_unassign(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--vm", "--catalog"}, {});
  expect_positionals(args, {"NAME"});
  const std::string vm = args.required("--vm");
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const TenantRecord t = find_tenant(catalog, args.positional[0]);
  catalog.unassign_vm(t.name, vm);
  std::cout << "unassigned " << vm << " from " << t.name << "\n";
  return 0;
}

int tenant_list(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {"--json"});
  expect_positionals(args, {});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const auto tenants = catalog.list_tenants();
  if (args.flag("--json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const TenantRecord& t : tenants)
      out.push_back({{"name", t.name},
                     {"num", t.num},
                     {"uid", t.uid ? nlohmann::json(*t.uid) : nlohmann::json(nullptr)},
                     {"gid", t.gid ? nlohmann::json(*t.gid) : nlohmann::json(nullptr)},
                     {"vms", t.vms}});
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows{{"NAME", "NUM", "UID", "GID", "VMS"}};
  for (const TenantRecord& t : tenants) {
    std::string vms;
    for (const std::string& vm : t.vms) vms += (vms.empty() ? "" : ",") + vm;
    rows.push_back({t.name, std::to_string(t.num), id_text(t.uid), id_text(t.gid), vms.empty() ? "-" : vms});
  }
  std::cout << table(rows);
  return 0;
}

int tenant_remove(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {});
  expect_positionals(args, {"NAME"});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const TenantRecord t = find_tenant(catalog, args.positional[0]);
  catalog.remove_tenant(t.name);
  std::cout << "removed tenant " << t.name << " (" << t.vms.size()
            << " vm assignments dropped; the backups stay in the catalog)\n";
  return 0;
}

}  // namespace sendense::cli
