// The commands of `sendense-restore`. Each takes its own arguments (after
// the command words), prints its result on stdout, and returns the exit
// status. Errors are thrown: Error / std::exception -> exit 1, UsageError -> 2
// (restore_main.cpp prints them as one line).
#pragma once

#include <string>
#include <vector>

#include "catalog/catalog.h"
#include "tools/cli/args.h"

namespace sendense::cli {

inline constexpr const char* kDefaultCatalog = "/var/lib/sendense-restore/catalog.db";

int catalog_import(int argc, char** argv, int first);  // catalog import DIR [--tenant NAME]
int catalog_add(int argc, char** argv, int first);     // catalog add --id ID --path IMAGE ...
int catalog_list(int argc, char** argv, int first);    // catalog list [--json]
int catalog_remove(int argc, char** argv, int first);  // catalog remove ID
int status(int argc, char** argv, int first);          // status [--json]
int inspect(int argc, char** argv, int first);         // inspect IMAGE [--format F] [--json] [--no-replay]
int tenant_add(int argc, char** argv, int first);      // tenant add NAME [--uid N] [--gid N]
int tenant_assign(int argc, char** argv, int first);   // tenant assign NAME --vm VM [--vm VM]...
int tenant_unassign(int argc, char** argv, int first); // tenant unassign NAME --vm VM
int tenant_list(int argc, char** argv, int first);     // tenant list [--json]
int tenant_remove(int argc, char** argv, int first);   // tenant remove NAME
int export_samba(int argc, char** argv, int first);    // export samba [--tenant NAME] [--mountpoint DIR] [--global]
int export_ganesha(int argc, char** argv, int first);  // export ganesha [--tenant NAME] [--mountpoint DIR]
int token_create(int argc, char** argv, int first);    // token create (--tenant NAME | --operator) [--expires T] [--label L]
int token_list(int argc, char** argv, int first);      // token list [--json]
int token_revoke(int argc, char** argv, int first);    // token revoke ID
int attach(int argc, char** argv, int first);          // attach ID [--mountpoint DIR] [--json]
int detach(int argc, char** argv, int first);          // detach ID
int sandbox_check(int argc, char** argv, int first);   // sandbox-check [--worker-memory MIB] [--json]

// Shared by the commands.
// Commands that only read or change existing rows refuse a catalog that does
// not exist instead of creating an empty one at a mistyped path: Error(ENOENT).
void require_existing_catalog(const std::string& db);
// The tenant `name` as the catalog matches it (ignoring case), or
// Error(ENOENT) naming it and the catalog.
TenantRecord require_tenant(Catalog& catalog, const std::string& name);
// Assigns `vms` to `tenant`: if another tenant owns any of them, Error(EBUSY)
// naming it and nothing is assigned. Returns the VMs that were not the
// tenant's before.
// --mountpoint, else the daemon's `mountpoint` from --config FILE (default
// /etc/sendense-restore/restorefs.conf, when it exists), else the packaged default.
std::string mountpoint_of(const Args& args);
// The daemon's setting `key` from --config FILE (default
// /etc/sendense-restore/restorefs.conf, when it exists): its effective
// value, "" when unset.
std::string daemon_setting(const Args& args, const std::string& key);
std::vector<std::string> assign_vms(Catalog& catalog, const std::string& tenant, const std::vector<std::string>& vms);

}  // namespace sendense::cli
