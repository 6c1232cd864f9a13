// sendense-restore: the operator's CLI. Parses the command words and
// dispatches to tools/cli/; every error becomes one line on stderr.
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "readers/common/error.h"
#include "readers/common/log.h"
#include "tools/cli/commands.h"

namespace {

constexpr const char* kUsage = R"(usage: sendense-restore COMMAND [ARGS]

  catalog import DIR [--tenant NAME] [--catalog DB]
      Add every backup image under DIR: *.qcow2/*.qcow as qcow2 (backing
      chain checked), *.raw/*.img as raw; the name decides, never the content.
      Ids, vm and time from backup-<vm>-<YYYYMMDDhhmmss> names, else the file
      stem, parent folder and mtime. Re-running is idempotent.
      --tenant assigns the VM of every imported backup to tenant NAME (which
      must exist; a VM another tenant owns is refused, its backups stay).
      <backup-id>-disk<K>.qcow2 (.raw, .img, .vmdk, .vhdx) files are the disks of one
      backup <backup-id>, in the order of K (0, 1, ... without gaps).
  catalog add --id ID --path IMAGE [--path IMAGE]... [--vm NAME] [--time ISO8601]
              [--format qcow2|raw|vmdk|vhdx] [--parent ID] [--catalog DB]
      Add or update one backup. Without --format the file name decides as
      for import; any other name needs --format. One --path per disk of a
      multi-disk backup, disk 0 first.
  catalog list [--json] [--catalog DB]
  catalog remove ID [--catalog DB]
      Forget a backup (its volumes and mount rows too); the image stays.
  status [--json] [--catalog DB]
      What the daemon has attached: status, mode, device, volumes, idle time.
  inspect IMAGE... [--format qcow2|raw|vmdk|vhdx] [--json] [--no-replay]
      The qcow2 chain, partition table and volumes of one image; several
      IMAGEs are the disks of one backup (disk 0 first): LVs across them too.
  tenant add NAME [--uid N] [--gid N] [--catalog DB]
      A customer whose view is tenants/NAME/ of the tree. NAME: 1 to 64 of
      A-Z a-z 0-9 . _ -, starting with a letter or digit, unique ignoring
      case. --uid/--gid: the owner shown inside its view (default 0).
  tenant assign NAME --vm VM [--vm VM]... [--catalog DB]
      NAME owns the VMs' backups (a VM has one owner; it need not have
      backups yet).
  tenant unassign NAME --vm VM [--catalog DB]
  tenant list [--json] [--catalog DB]
  tenant remove NAME [--catalog DB]
      Forget the tenant and its VM assignments; the backups stay.
  export samba [--tenant NAME] [--mountpoint DIR] [--config FILE] [--catalog DB]
  export samba --global
      Print a read-only Samba share for the whole tree ([sendense-restore],
      for operators) or for tenant NAME ([sendense-NAME], path
      MOUNTPOINT/tenants/NAME, sessions forced to the tenant's uid/gid,
      which need passwd/group entries). --global prints the [global] lines
      the shares rely on. Comments in the output explain each setting.
  export ganesha [--tenant NAME] [--mountpoint DIR] [--config FILE] [--catalog DB]
      Print an NFS-Ganesha EXPORT (FSAL VFS, read-only) for the whole tree
      (Export_Id 1000, this host only) or for tenant NAME (Export_Id 1000 +
      its number, all users squashed to its uid/gid, Pseudo /sendense/NAME).
      MOUNTPOINT: --mountpoint, else `mountpoint` in FILE (default
      /etc/sendense-restore/restorefs.conf), else /mnt/sendense/restore.
      A tenant needs --uid and --gid to be exported.
  token create (--tenant NAME | --operator) [--expires 30d|12h|TIME] [--label TEXT]
               [--catalog DB]
      An API token of the HTTP service (sendense-restore-web): a tenant's
      sees tenants/NAME/ only, the operator's the whole tree. The secret is
      printed once, alone on stdout; the catalog keeps only its SHA-256.
  token list [--json] [--catalog DB]
  token revoke ID [--catalog DB]
      Refused from the service's next request on.
  attach ID [--mountpoint DIR] [--config FILE] [--json] [--catalog DB]
      Attach backup ID now (list its folder through the mounted tree) and
      print its mount id, folder and volumes.
  detach ID [--catalog DB]
      Ask the daemon to detach backup ID and wait (10 s at most) until it has.
  sandbox-check [--worker-memory MIB] [--config FILE] [--json]
      Start backup workers as the daemon does (--isolation worker), check
      from outside that each is confined (ids, capabilities, seccomp,
      namespaces, empty root, descriptors, limits), and have fresh workers
      try each forbidden action (open a file, run a program, open a socket,
      trace, mount, write the image, exceed the limits, ...). Prints what
      stopped each; exit status 1 when anything was allowed. Needs root.

  --version
      Print the version and exit.

  --catalog DB defaults to /var/lib/sendense-restore/catalog.db.
  Exit status: 0 ok, 1 error, 2 usage error.
)";

bool wants_help(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) return false;
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  }
  return false;
}

int dispatch(int argc, char** argv) {
  using namespace sendense::cli;
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "catalog") {
    const std::string sub = argc > 2 ? argv[2] : "";
    if (sub == "import") return catalog_import(argc, argv, 3);
    if (sub == "add") return catalog_add(argc, argv, 3);
    if (sub == "list") return catalog_list(argc, argv, 3);
    if (sub == "remove") return catalog_remove(argc, argv, 3);
    throw UsageError(sub.empty() ? "catalog needs a subcommand (import, add, list, remove)"
                                 : "unknown catalog subcommand '" + sub + "'");
  }
  if (cmd == "tenant") {
    const std::string sub = argc > 2 ? argv[2] : "";
    if (sub == "add") return tenant_add(argc, argv, 3);
    if (sub == "assign") return tenant_assign(argc, argv, 3);
    if (sub == "unassign") return tenant_unassign(argc, argv, 3);
    if (sub == "list") return tenant_list(argc, argv, 3);
    if (sub == "remove") return tenant_remove(argc, argv, 3);
    throw UsageError(sub.empty() ? "tenant needs a subcommand (add, assign, unassign, list, remove)"
                                 : "unknown tenant subcommand '" + sub + "'");
  }
  if (cmd == "export") {
    const std::string sub = argc > 2 ? argv[2] : "";
    if (sub == "samba") return export_samba(argc, argv, 3);
    if (sub == "ganesha") return export_ganesha(argc, argv, 3);
    throw UsageError(sub.empty() ? "export needs a server (samba, ganesha)" : "unknown export server '" + sub + "'");
  }
  if (cmd == "token") {
    const std::string sub = argc > 2 ? argv[2] : "";
    if (sub == "create") return token_create(argc, argv, 3);
    if (sub == "list") return token_list(argc, argv, 3);
    if (sub == "revoke") return token_revoke(argc, argv, 3);
    throw UsageError(sub.empty() ? "token needs a subcommand (create, list, revoke)"
                                 : "unknown token subcommand '" + sub + "'");
  }
  if (cmd == "attach") return attach(argc, argv, 2);
  if (cmd == "detach") return detach(argc, argv, 2);
  if (cmd == "sandbox-check") return sandbox_check(argc, argv, 2);
  if (cmd == "status") return status(argc, argv, 2);
  if (cmd == "inspect") return inspect(argc, argv, 2);
  throw UsageError(cmd.empty() ? "missing command" : "unknown command '" + cmd + "'");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::cout << "sendense-restore " << SENDENSE_VERSION << "\n";
    return 0;
  }
  if (wants_help(argc, argv)) {
    std::cout << kUsage;
    return 0;
  }
  // Library log lines (e.g. a migration) stay out of the way of the output.
  sendense::log::set_level(sendense::log::Level::warn);
  try {
    return dispatch(argc, argv);
  } catch (const sendense::cli::UsageError& e) {
    std::cerr << "sendense-restore: " << e.what() << " (see sendense-restore --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "sendense-restore: " << e.what() << "\n";
    return 1;
  }
}
