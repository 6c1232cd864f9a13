// catalog import / add / list / remove.
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/format.h"

namespace sendense::cli {

namespace {

nlohmann::json disks_json(const BackupRecord& b) {
  nlohmann::json out = nlohmann::json::array();
  for (const BackupDisk& d : b.all_disks()) out.push_back({{"path", d.image_path}, {"format", d.format}});
  return out;
}

nlohmann::json to_json(const BackupRecord& b) {
  return {{"id", b.id},
          {"num", b.num},
          {"vm", b.vm},
          {"time", to_iso8601(b.created_at)},
          {"kind", b.kind},
          {"parent", b.parent_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(b.parent_id)},
          {"format", b.format},
          {"size", b.size},
          {"path", b.image_path},
          {"disks", disks_json(b)},
          {"status", b.status}};
}

}  // namespace

void require_existing_catalog(const std::string& db) {
  std::error_code ec;
  if (!std::filesystem::exists(db, ec)) throw Error(ENOENT, "catalog not found (give --catalog DB)", db);
}

int catalog_import(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog", "--tenant"}, {});
  expect_positionals(args, {"DIR"});
  const auto tenant_name = args.value("--tenant");
  if (tenant_name) require_existing_catalog(args.value_or("--catalog", kDefaultCatalog));
  Catalog catalog(args.value_or("--catalog", kDefaultCatalog));
  // The tenant must exist before anything is imported.
  std::optional<TenantRecord> tenant;
  if (tenant_name) tenant = require_tenant(catalog, *tenant_name);
  const ImportReport r = import_repository(catalog, args.positional[0]);

  for (const auto& id : r.added) std::cout << "added      " << id << "\n";
  for (const auto& id : r.updated) std::cout << "updated    " << id << "\n";
  for (const auto& id : r.missing) std::cout << "missing    " << id << " (image file gone; kept in the catalog)\n";
  for (const auto& w : r.warnings) std::cerr << "sendense-restore: warning: " << w << "\n";
  for (const auto& e : r.errors) std::cerr << "sendense-restore: error: " << e << "\n";
  std::cout << r.added.size() << " added, " << r.updated.size() << " updated, " << r.unchanged.size()
            << " unchanged, " << r.errors.size() << " errors, " << r.missing.size() << " missing\n";
  bool assigned_all = true;
  if (tenant) {
    // Every VM of an imported backup (added, updated or unchanged) is the tenant's.
    std::set<std::string> vms;
    for (const auto* ids : {&r.added, &r.updated, &r.unchanged})
      for (const std::string& id : *ids)
        if (auto b = catalog.find_backup(id)) vms.insert(b->vm);
    try {
      for (const std::string& vm : assign_vms(catalog, tenant->name, {vms.begin(), vms.end()}))
        std::cout << "assigned   " << vm << " to " << tenant->name << "\n";
    } catch (const Error& e) {
      // The backups are imported; only the assignment is refused.
      std::cerr << "sendense-restore: error: " << e.what() << "\n";
      assigned_all = false;
    }
  }
  return r.errors.empty() && assigned_all ? 0 : 1;
}

int catalog_add(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first,
                               {"--id", "--path", "--vm", "--time", "--format", "--parent", "--catalog"}, {},
                               {"--path"});
  expect_positionals(args, {});
  const std::string id = args.required("--id");
  // One --path per disk of the backup, in disk order (disk 0 first).
  const std::vector<std::string> paths = args.all("--path");
  if (paths.empty()) throw UsageError("missing --path");
  const auto format = format_option(args);
  std::optional<int64_t> when;
  if (auto t = args.value("--time")) {
    when = parse_iso8601(*t);
    if (!when) throw UsageError("--time '" + *t + "' is not an ISO-8601 time (e.g. 2026-01-01T12:00:00Z)");
  }

  // Without --format the file name decides (never the content); a name that
  // tells nothing is refused rather than guessed.
  for (const std::string& path : paths)
    if (!format && choose_format(path).format.empty())
      throw UsageError("cannot tell the format of '" + path +
                       "' from its name (.qcow2/.qcow, .raw/.img, .vmdk, .vhdx): give --format qcow2, raw, vmdk or vhdx");

  Catalog catalog(args.value_or("--catalog", kDefaultCatalog));
  // Every disk's chain is validated as the daemon would open it.
  std::vector<ImageDescription> described;
  for (const std::string& path : paths) described.push_back(describe_image(path, format.value_or("")));
  ImageDescription& d = described.front();
  for (const auto& one : described)
    for (const auto& w : one.warnings) std::cerr << "sendense-restore: warning: " << w << "\n";
  BackupRecord& b = d.record;
  b.id = id;
  b.disks.clear();
  b.size = 0;
  for (const auto& one : described) {
    for (const BackupDisk& seen : b.disks)
      if (seen.image_path == one.record.image_path)
        throw UsageError("--path '" + one.record.image_path + "' given for two disks");
    b.disks.push_back(BackupDisk{one.record.image_path, one.record.format});
    b.size += one.record.size;
  }
  if (auto vm = args.value("--vm")) b.vm = *vm;
  if (when) b.created_at = *when;
  if (auto parent = args.value("--parent")) {
    if (!catalog.find_backup(*parent)) throw Error(ENOENT, "parent backup '" + *parent + "' is not in the catalog", catalog.path());
    b.parent_id = *parent;
    b.kind = "incremental";
  } else if (!d.backing_name.empty()) {
    for (const BackupRecord& other : catalog.list_backups()) {
      if (!d.backing_path.empty() && other.image_path == d.backing_path && other.id != b.id) {
        b.parent_id = other.id;
        break;
      }
    }
    if (b.parent_id.empty())
      std::cerr << "sendense-restore: warning: " << b.image_path << ": backing file '" << d.backing_name
                << "' is not a cataloged backup; added without parent\n";
  }
  const bool existed = catalog.find_backup(b.id).has_value();
  catalog.upsert_backup(b);
  std::cout << (existed ? "updated " : "added ") << b.id << " (" << b.format << ", " << b.kind
            << (b.disks.size() > 1 ? ", " + std::to_string(b.disks.size()) + " disks" : "")
            << (b.parent_id.empty() ? "" : ", parent " + b.parent_id) << ")\n";
  return 0;
}

int catalog_list(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {"--json"});
  expect_positionals(args, {});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const auto backups = catalog.list_backups();
  if (args.flag("--json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& b : backups) out.push_back(to_json(b));
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows{{"ID", "VM", "TIME", "KIND", "PARENT", "FORMAT", "SIZE", "PATH"}};
  for (const auto& b : backups)
    rows.push_back({b.id, b.vm, to_iso8601(b.created_at), b.kind, b.parent_id.empty() ? "-" : b.parent_id, b.format,
                    human_size(b.size), b.image_path});
  std::cout << table(rows);
  return 0;
}

int catalog_remove(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {});
  expect_positionals(args, {"ID"});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const std::string& id = args.positional[0];
  std::vector<std::string> children;
  for (const auto& b : catalog.list_backups())
    if (b.parent_id == id) children.push_back(b.id);
  if (!catalog.remove_backup(id)) throw Error(ENOENT, "no backup '" + id + "' in the catalog", db);
  std::cout << "removed " << id << " (the image file is left in place)\n";
  for (const auto& c : children) std::cout << "note: " << c << " no longer has a parent in the catalog\n";
  return 0;
}

}  // namespace sendense::cli
