#include "fuse/tenant_views.h"

#include <sys/mount.h>

#include <set>

#include "readers/common/log.h"

namespace sendense {

namespace {
// Each view's own workers; the operator's tree keeps its 64.
constexpr int kTenantThreads = 16;
}  // namespace

TenantViews::TenantViews(std::string mountpoint, std::string mount_options, CatalogView& view, AttachManager& manager,
                         Metrics* metrics, FuseHolder& holder, std::map<std::string, FuseHolder::Held> kept)
    : mountpoint_(std::move(mountpoint)),
      options_(std::move(mount_options)),
      view_(view),
      manager_(manager),
      metrics_(metrics),
      holder_(holder),
      kept_(std::move(kept)) {}

TenantViews::~TenantViews() {
  for (auto& [name, served] : served_) served.mount->stop();
  served_.clear();
}

void TenantViews::serve(const std::string& tenant) {
  const std::string path = path_of(mountpoint_, tenant);
  std::optional<FuseHolder::Held> kept;
  if (auto it = kept_.find(path); it != kept_.end()) {
    kept.emplace(std::move(it->second));
    kept_.erase(it);
  }
  Served s;
  s.tree = std::make_unique<RestoreTree>(view_, manager_, TreeTimeouts{}, tenant);
  s.context = std::make_unique<FuseContext>(*s.tree);
  s.context->metrics = metrics_;
  s.mount = std::make_unique<ServedMount>(path, *s.context, options_, holder_, std::move(kept));
  s.mount->start(kTenantThreads);
  if (!s.mount->taken_over()) log::info("tenant_view_mounted", {{"tenant", tenant}, {"mountpoint", path}});
  served_.emplace(tenant, std::move(s));
}

void TenantViews::reconcile() {
  auto snap = view_.snapshot();
  std::set<std::string> wanted;
  for (const auto& t : snap->tenants) wanted.insert(t.name);
  for (auto it = served_.begin(); it != served_.end();) {
    if (wanted.contains(it->first)) {
      ++it;
      continue;
    }
    it->second.mount->unmount();
    log::info("tenant_view_unmounted", {{"tenant", it->first}, {"reason", "tenant removed"}});
    it = served_.erase(it);
  }
  for (const auto& name : wanted) {
    if (served_.contains(name)) continue;
    try {
      serve(name);
    } catch (const std::exception& e) {
      log::error("tenant_view_failed", {{"tenant", name}, {"error", e.what()}});
    }
  }
  // Kept mounts of tenants removed while no daemon ran.
  for (auto& [path, held] : kept_) {
    holder_.drop(path);
    ::umount2(path.c_str(), MNT_DETACH);
    log::info("tenant_view_unmounted", {{"mountpoint", path}, {"reason", "tenant removed"}});
  }
  kept_.clear();
}

}  // namespace sendense
