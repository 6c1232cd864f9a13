// The daemon's in-memory picture of the catalog: which backups exist, their
// by-vm names, and which backup each volume id belongs to. The root and
// by-vm/ are answered from it alone (no image is opened), and the read path
// never waits on SQLite: a background refresh swaps in a new snapshot.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "catalog/catalog.h"

namespace sendense {

struct CatalogSnapshot {
  std::vector<BackupRecord> backups;                         // completed backups, ordered by id
  std::unordered_map<std::string, size_t> by_id;             // id -> index in backups
  std::unordered_map<int64_t, size_t> by_num;                // num -> index
  // vm -> (by-vm entry name, index), sorted by backup time
  std::map<std::string, std::vector<std::pair<std::string, size_t>>> by_vm;
  std::unordered_map<uint64_t, std::string> vm_by_key;       // node::vm_key(vm) -> vm
  std::vector<TenantRecord> tenants;                         // usable as folder names, by name
  std::unordered_map<std::string, std::string> owner_of_vm;  // vm -> tenant name

  const TenantRecord* tenant(const std::string& name) const;
  const TenantRecord* tenant_num(int64_t num) const;
  // Whether `tenant` ("" = the operator, who sees everything) may see `vm`.
  bool sees(const std::string& tenant, const std::string& vm) const;

  const BackupRecord* find(const std::string& id) const;
  const BackupRecord* find_num(int64_t num) const;
};

// Name of a backup under by-vm/<vm>/: its time as "YYYY-MM-DD_hhmmss" (UTC).
std::string by_vm_entry_name(int64_t created_at);

class CatalogView {
 public:
  explicit CatalogView(Catalog& catalog);

  // Re-reads the catalog; returns the ids of backups that disappeared.
  // Safe to call from any thread; readers keep the snapshot they hold.
  std::vector<std::string> refresh();

  std::shared_ptr<const CatalogSnapshot> snapshot() const;

  // Which backup a volume id belongs to (volumes are recorded at attach).
  std::optional<std::string> backup_of_volume(int64_t volume_id) const;
  void remember_volume(int64_t volume_id, const std::string& backup_id);

 private:
  Catalog& catalog_;
  mutable std::mutex mutex_;
  std::shared_ptr<const CatalogSnapshot> snapshot_;
  std::unordered_map<int64_t, std::string> volume_owner_;
};

}  // namespace sendense
