// attach / detach: what the first look inside a backup folder and the idle
// timeout do, on demand. attach looks inside the folder through the mounted
// tree (the daemon attaches it as for any reader); detach asks the daemon
// through the catalog (Catalog::request_detach) and waits for it.
#include <dirent.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tools/cli/commands.h"

namespace sendense::cli {

namespace {

BackupRecord require_backup(Catalog& catalog, const std::string& id) {
  auto b = catalog.find_backup(id);
  if (!b) throw Error(ENOENT, "no backup '" + id + "' in the catalog", catalog.path());
  return *b;
}

// The live restore_mounts row of `backup_id` (mounting or mounted).
std::optional<MountRecord> live_mount(Catalog& catalog, const std::string& backup_id) {
  for (MountRecord& m : catalog.list_mounts())
    if (m.backup_id == backup_id && (m.status == "mounted" || m.status == "mounting")) return std::move(m);
  return std::nullopt;
}

}  // namespace

int attach(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--mountpoint", "--config", "--catalog"}, {"--json"});
  expect_positionals(args, {"ID"});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const BackupRecord b = require_backup(catalog, args.positional[0]);
  const std::string folder = mountpoint_of(args) + "/" + b.id;
  // Listing the folder is the attach; its errors are the attach's (EBUSY: every
  // attached backup is in use; EIO: the image could not be opened, see the log).
  DIR* dir = ::opendir(folder.c_str());
  if (!dir) throw Error(errno, std::string("cannot attach: ") + std::strerror(errno), folder);
  errno = 0;
  while (::readdir(dir) != nullptr) {
  }
  const int err = errno;
  ::closedir(dir);
  if (err != 0) throw Error(err, std::string("cannot attach: ") + std::strerror(err), folder);
  const auto m = live_mount(catalog, b.id);
  if (!m) throw Error(EIO, "the folder was listed but the daemon recorded no attach (is the daemon serving it?)", folder);
  const auto volumes = catalog.volumes_of(b.id);
  if (args.flag("--json")) {
    nlohmann::json vols = nlohmann::json::array();
    for (const VolumeRecord& v : volumes) vols.push_back({{"name", v.name}, {"fs_type", v.fs_type}});
    std::cout << nlohmann::json{{"mount_id", m->id}, {"backup_id", b.id}, {"path", folder}, {"status", m->status},
                                {"volumes", vols}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::string vols;
  for (const VolumeRecord& v : volumes) vols += (vols.empty() ? "" : ",") + v.name + ":" + v.fs_type;
  std::cout << "attached " << b.id << " mount=" << m->id << " path=" << folder
            << " volumes=" << (vols.empty() ? "-" : vols) << "\n";
  return 0;
}

int detach(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {});
  expect_positionals(args, {"ID"});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const BackupRecord b = require_backup(catalog, args.positional[0]);
  if (!live_mount(catalog, b.id)) {
    std::cout << b.id << " is not attached\n";
    return 0;
  }
  catalog.request_detach(b.id);
  // The daemon's housekeeping takes requests every half second.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (live_mount(catalog, b.id)) {
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(ETIMEDOUT, "the daemon did not detach " + b.id + " within 10 s (is sendense-restorefs running?)",
                  catalog.path());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::cout << "detached " << b.id << "\n";
  return 0;
}

}  // namespace sendense::cli
