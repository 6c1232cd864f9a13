#include "web/broker.h"

#include <algorithm>
#include <ctime>
#include <set>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "web/frames.h"

namespace sendense::web {
namespace {

using nlohmann::json;

json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

// The VMs the caller may see: every one for the operator (nullopt).
std::optional<std::set<std::string>> vms_of(Catalog& catalog, const json& tenant) {
  if (tenant.is_null()) return std::nullopt;
  const std::string name = tenant.get<std::string>();
  for (const auto& t : catalog.list_tenants())
    if (t.name == name) return std::set<std::string>(t.vms.begin(), t.vms.end());
  return std::set<std::string>{};  // a removed tenant sees nothing
}

bool visible(const std::optional<std::set<std::string>>& vms, const std::string& vm) {
  return !vms || vms->count(vm) > 0;
}

json mount_row(Catalog& catalog, const MountRecord& m, int64_t now) {
  json vols = json::array();
  for (const auto& v : catalog.volumes_of(m.backup_id))
    vols.push_back({{"id", v.id}, {"name", v.name}, {"fs_type", v.fs_type}, {"offset", v.offset},
                    {"length", v.length}, {"backend", v.backend}});
  return {{"mount_id", m.id},
          {"backup", m.backup_id},
          {"backup_id", m.backup_id},
          {"mount_path", m.mount_path},
          {"status", m.status},
          {"attach_mode", m.attach_mode},
          {"device", m.nbd_device.empty() ? "userspace" : m.nbd_device},
          {"image_reader", null_or(m.image_reader)},
          {"filesystem_type", m.filesystem_type},
          {"volumes", vols},
          {"created_at", to_iso8601(m.created_at)},
          {"last_accessed_at", to_iso8601(m.last_accessed_at)},
          {"idle_seconds", std::max<int64_t>(0, now - m.last_accessed_at)},
          {"expires_at", to_iso8601(m.expires_at)},
          {"error", null_or(m.error)}};
}

json backups(Catalog& catalog, const json& req) {
  const auto vms = vms_of(catalog, req.at("tenant"));
  std::set<std::string> attached;
  for (const auto& m : catalog.list_mounts())
    if (m.status == "mounted") attached.insert(m.backup_id);
  json out = json::array();
  for (const auto& b : catalog.list_backups()) {  // ordered by vm, created_at
    if (!visible(vms, b.vm) || b.status != "completed") continue;
    json vols = json::array();
    for (const auto& v : catalog.volumes_of(b.id)) vols.push_back({{"name", v.name}, {"fs_type", v.fs_type}});
    out.push_back({{"id", b.id},
                   {"vm", b.vm},
                   {"created_at", to_iso8601(b.created_at)},
                   {"kind", b.kind},
                   {"parent", null_or(b.parent_id)},
                   {"attached", attached.count(b.id) > 0},
                   {"volumes", vols}});
  }
  return {{"backups", out}};
}

// The caller's mount rows (by the VM of each row's backup).
std::vector<MountRecord> own_mounts(Catalog& catalog, const json& tenant) {
  const auto vms = vms_of(catalog, tenant);
  std::vector<MountRecord> out;
  for (const auto& m : catalog.list_mounts()) {
    auto b = catalog.find_backup(m.backup_id);
    if (b && visible(vms, b->vm)) out.push_back(m);
  }
  return out;
}

json audit(Catalog& catalog, const json& req) {
  AuditRecord r;
  r.at = ::time(nullptr);
  r.tenant = req.value("tenant", "");
  r.token_id = req.value("token_id", "");
  r.action = req.value("action", "");
  r.backup_id = req.value("backup_id", "");
  r.path = req.value("path", "");
  r.bytes = req.value("bytes", uint64_t{0});
  r.result = req.value("result", "");
  catalog.add_audit(r);
  log::info("web_audit", {{"tenant", r.tenant.empty() ? "-" : r.tenant},
                          {"token", r.token_id},
                          {"action", r.action},
                          {"backup", r.backup_id},
                          {"path", r.path},
                          {"bytes", std::to_string(r.bytes)},
                          {"result", r.result}});
  return {{"ok", true}};
}

}  // namespace

json answer_broker_request(Catalog& catalog, const json& req) {
  try {
    const std::string op = req.at("op").get<std::string>();
    if (op == "auth") {
      auto t = catalog.authenticate_api_token(req.at("token").get<std::string>(), ::time(nullptr));
      if (!t) return {{"ok", false}};
      return {{"ok", true}, {"token_id", t->id}, {"tenant", null_or(t->tenant)}};
    }
    if (op == "backups") return backups(catalog, req);
    if (op == "mounts") {
      const int64_t now = ::time(nullptr);
      json rows = json::array();
      for (const auto& m : own_mounts(catalog, req.at("tenant"))) rows.push_back(mount_row(catalog, m, now));
      return {{"mounts", rows}};
    }
    if (op == "detach") {
      const std::string id = req.at("mount_id").get<std::string>();
      for (const auto& m : own_mounts(catalog, req.at("tenant"))) {
        if (m.id != id) continue;
        catalog.request_detach(m.backup_id);
        log::info("web_detach_requested", {{"backup", m.backup_id}, {"mount", m.id}});
        return {{"ok", true}};
      }
      return {{"ok", false}};
    }
    if (op == "audit") return audit(catalog, req);
    return {{"error", "unknown op " + op}};
  } catch (const json::exception& e) {
    return {{"error", std::string("malformed request: ") + e.what()}};
  } catch (const std::exception& e) {
    log::error("broker_failed", {{"error", e.what()}});
    return {{"error", e.what()}};
  }
}

void serve_broker(int fd, Catalog& catalog) {
  while (auto req = read_frame(fd)) write_frame(fd, answer_broker_request(catalog, *req));
}

}  // namespace sendense::web
