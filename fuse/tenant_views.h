// Every tenant's view, each its own FUSE mount at <mountpoint>/tenants/<name>
// served by this daemon: NFS servers serve any handle on the filesystem they
// export (no subtree check), so a folder inside the operator's mount is no
// boundary, and a mount of its own is. Mounted when a tenant appears in the
// catalog (the housekeeping refresh), unmounted when it is removed, and
// left to the holder, like the tree, when the daemon stops.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "fuse/attach_manager.h"
#include "fuse/catalog_view.h"
#include "fuse/fuse_holder.h"
#include "fuse/metrics.h"
#include "fuse/restore_tree.h"
#include "fuse/served_mount.h"

namespace sendense {

class TenantViews {
 public:
  // `kept`: the tenants' mounts a previous run left with the holder, by path.
  TenantViews(std::string mountpoint, std::string mount_options, CatalogView& view, AttachManager& manager,
              Metrics* metrics, FuseHolder& holder, std::map<std::string, FuseHolder::Held> kept);
  ~TenantViews();  // ends the sessions; the mounts stay with the holder

  // Mounts the views of new tenants, unmounts those of removed ones.
  void reconcile();

  static std::string path_of(const std::string& mountpoint, const std::string& tenant) {
    return mountpoint + "/tenants/" + tenant;
  }

 private:
  struct Served {
    std::unique_ptr<RestoreTree> tree;
    std::unique_ptr<FuseContext> context;
    std::unique_ptr<ServedMount> mount;
  };
  void serve(const std::string& tenant);

  const std::string mountpoint_;
  const std::string options_;
  CatalogView& view_;
  AttachManager& manager_;
  Metrics* metrics_;
  FuseHolder& holder_;
  std::map<std::string, FuseHolder::Held> kept_;
  std::map<std::string, Served> served_;  // by tenant name
};

}  // namespace sendense
