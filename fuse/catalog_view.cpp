#include "fuse/catalog_view.h"

#include <algorithm>
#include <ctime>
#include <unordered_set>

#include "readers/fs/names.h"
#include "fuse/node_id.h"

namespace sendense {

const BackupRecord* CatalogSnapshot::find(const std::string& id) const {
  auto it = by_id.find(id);
  return it == by_id.end() ? nullptr : &backups[it->second];
}

const BackupRecord* CatalogSnapshot::find_num(int64_t num) const {
  auto it = by_num.find(num);
  return it == by_num.end() ? nullptr : &backups[it->second];
}

const TenantRecord* CatalogSnapshot::tenant(const std::string& name) const {
  for (const auto& t : tenants)
    if (t.name == name) return &t;
  return nullptr;
}

const TenantRecord* CatalogSnapshot::tenant_num(int64_t num) const {
  for (const auto& t : tenants)
    if (t.num == num) return &t;
  return nullptr;
}

bool CatalogSnapshot::sees(const std::string& name, const std::string& vm) const {
  if (name.empty()) return true;
  auto it = owner_of_vm.find(vm);
  return it != owner_of_vm.end() && it->second == name;
}

std::string by_vm_entry_name(int64_t created_at) {
  std::time_t t = static_cast<std::time_t>(created_at);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d_%H%M%S", &tm);
  return buf;
}

namespace {

// A backup id becomes a name in the root next to by-vm/ and tenants/.
bool usable_name(const std::string& id) { return valid_entry_name(id) && id != "by-vm" && id != "tenants"; }

std::shared_ptr<const CatalogSnapshot> build(std::vector<BackupRecord> rows, std::vector<TenantRecord> tenants) {
  auto snap = std::make_shared<CatalogSnapshot>();
  for (auto& t : tenants) {
    if (!valid_tenant_name(t.name)) continue;
    for (const auto& vm : t.vms) snap->owner_of_vm[vm] = t.name;
    snap->tenants.push_back(std::move(t));
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  for (auto& r : rows) {
    if (r.status != "completed" || !usable_name(r.id)) continue;
    snap->by_id[r.id] = snap->backups.size();
    snap->by_num[r.num] = snap->backups.size();
    snap->backups.push_back(std::move(r));
  }
  for (size_t i = 0; i < snap->backups.size(); ++i) {
    const auto& b = snap->backups[i];
    if (b.vm.empty() || !usable_name(b.vm)) continue;
    snap->by_vm[b.vm].emplace_back(by_vm_entry_name(b.created_at), i);
    snap->vm_by_key[node::vm_key(b.vm)] = b.vm;
  }
  for (auto& [vm, entries] : snap->by_vm) {
    std::stable_sort(entries.begin(), entries.end(), [&](const auto& a, const auto& b) {
      return snap->backups[a.second].created_at < snap->backups[b.second].created_at;
    });
    // Two backups of one vm in the same second: the later ones are named by id.
    std::unordered_set<std::string> seen{"latest"};
    for (auto& [name, index] : entries)
      if (!seen.insert(name).second) name = snap->backups[index].id;
  }
  return snap;
}

}  // namespace

CatalogView::CatalogView(Catalog& catalog) : catalog_(catalog), snapshot_(std::make_shared<CatalogSnapshot>()) {
  for (const auto& v : catalog_.list_volumes()) volume_owner_[v.id] = v.backup_id;
}

std::vector<std::string> CatalogView::refresh() {
  auto fresh = build(catalog_.list_backups(), catalog_.list_tenants());
  std::vector<std::string> gone;
  std::lock_guard lock(mutex_);
  for (const auto& b : snapshot_->backups)
    if (!fresh->find(b.id)) gone.push_back(b.id);
  snapshot_ = std::move(fresh);
  return gone;
}

std::shared_ptr<const CatalogSnapshot> CatalogView::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

std::optional<std::string> CatalogView::backup_of_volume(int64_t volume_id) const {
  std::lock_guard lock(mutex_);
  auto it = volume_owner_.find(volume_id);
  if (it == volume_owner_.end()) return std::nullopt;
  return it->second;
}

void CatalogView::remember_volume(int64_t volume_id, const std::string& backup_id) {
  std::lock_guard lock(mutex_);
  volume_owner_[volume_id] = backup_id;
}

}  // namespace sendense
