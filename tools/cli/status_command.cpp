// status: the restore_mounts rows, i.e. what the daemon has attached.
#include <ctime>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/format.h"

namespace sendense::cli {

namespace {

nlohmann::json journal_json(const VolumeRecord& v) {
  if (v.journal_state.empty()) return nullptr;
  return {{"state", v.journal_state},
          {"transactions", v.journal_transactions},
          {"blocks", v.journal_blocks},
          {"note", v.journal_note}};
}

// "ext4" or "ext4 (journal replayed: 3 transactions, 41 blocks)".
std::string volume_text(const VolumeRecord& v) {
  std::string s = v.name + ":" + v.fs_type;
  if (v.backend == "kernel") s += "[kernel]";
  if (v.journal_state == "replayed" && v.backend == "kernel")
    s += " (journal replayed " + v.journal_note + ")";
  else if (v.journal_state == "replayed")
    s += " (journal replayed: " + std::to_string(v.journal_transactions) + " transactions, " +
         std::to_string(v.journal_blocks) + " blocks)";
  else if (v.journal_state == "skipped" || v.journal_state == "unsupported")
    s += " (journal " + v.journal_state + ": shown as stored)";
  else if (v.journal_state == "unknown")
    s += " (journal state unknown: shown as stored)";
  return s;
}

}  // namespace

int status(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {"--json"});
  expect_positionals(args, {});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  std::error_code ec;
  if (!std::filesystem::exists(db, ec)) throw Error(ENOENT, "catalog not found (give --catalog DB)", db);
  Catalog catalog(db);
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  const auto mounts = catalog.list_mounts();

  struct Row {
    const MountRecord* m;
    std::vector<VolumeRecord> volumes;
  };
  std::vector<Row> rows;
  for (const auto& m : mounts) rows.push_back({&m, catalog.volumes_of(m.backup_id)});

  if (args.flag("--json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : rows) {
      const MountRecord& m = *r.m;
      nlohmann::json vols = nlohmann::json::array();
      for (const auto& v : r.volumes)
        vols.push_back({{"id", v.id},
                        {"name", v.name},
                        {"fs_type", v.fs_type},
                        {"offset", v.offset},
                        {"length", v.length},
                        {"backend", v.backend},
                        {"journal", journal_json(v)}});
      out.push_back({{"mount_id", m.id},
                     {"backup", m.backup_id},
                     {"mount_path", m.mount_path},
                     {"status", m.status},
                     {"attach_mode", m.attach_mode},
                     {"device", m.nbd_device.empty() ? "userspace" : m.nbd_device},
                     {"image_reader", m.image_reader.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.image_reader)},
                     {"filesystem_type", m.filesystem_type},
                     {"volumes", vols},
                     {"owner_pid", m.owner_pid},
                     {"created_at", to_iso8601(m.created_at)},
                     {"last_accessed_at", to_iso8601(m.last_accessed_at)},
                     {"idle_seconds", std::max<int64_t>(0, now - m.last_accessed_at)},
                     {"expires_at", to_iso8601(m.expires_at)},
                     {"error", m.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(m.error)}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }

  if (rows.empty()) {
    std::cout << "no attached backups\n";
    return 0;
  }
  std::vector<std::vector<std::string>> table_rows{
      {"BACKUP", "STATUS", "MODE", "DEVICE", "READER", "VOLUMES", "IDLE", "EXPIRES", "ERROR"}};
  for (const auto& r : rows) {
    const MountRecord& m = *r.m;
    std::string vols;
    for (const auto& v : r.volumes) vols += (vols.empty() ? "" : ",") + volume_text(v);
    table_rows.push_back({m.backup_id, m.status, m.attach_mode, m.nbd_device.empty() ? "userspace" : m.nbd_device,
                          m.image_reader.empty() ? "-" : m.image_reader, vols.empty() ? "-" : vols, human_duration(now - m.last_accessed_at),
                          to_iso8601(m.expires_at), m.error.empty() ? "-" : m.error});
  }
  std::cout << table(table_rows);
  return 0;
}

}  // namespace sendense::cli
