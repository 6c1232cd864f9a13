#include "readers/engine/open_backup.h"

#include <filesystem>

#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/fs/paged_listing.h"
#include "readers/fs/registry.h"

namespace sendense {

OpenedDisks open_disks(const std::vector<DiskSpec>& disks, QemuOpener qemu, const CacheBudgetPtr& budget) {
  OpenedDisks out;
  for (const DiskSpec& d : disks) {
    const std::string folder = std::filesystem::path(std::filesystem::absolute(d.image_path)).parent_path().string();
    try {
      out.devices.push_back(open_image(d.image_path, d.format, folder, qemu, budget));
    } catch (const Error& e) {
      // Name the image even when a lower layer named only a part of it.
      if (std::string(e.what()).find(d.image_path) == std::string::npos) rethrow_with_context(e, d.image_path);
      throw;
    }
    if (!out.readers.empty()) out.readers += ",";
    out.readers += out.devices.back()->reader();
  }
  return out;
}

OpenedVolumes open_volumes(const BackupLayout& layout, const EngineOptions& options) {
  OpenedVolumes out;
  for (const Volume& v : layout.volumes) {
    const std::string where = options.label + "/" + v.name;
    const bool userspace = v.device && has_reader(v.type);
    OpenedVolume opened{&v, nullptr, ""};
    if (options.kernel && v.device) {
      try {
        opened.fs = options.kernel(v, where, userspace);
        if (opened.fs) opened.backend = "kernel";
      } catch (const Error& e) {
        // Where a userspace reader exists it serves the volume instead.
        if (userspace)
          log::error("kernel_volume_failed_using_userspace",
                     {{"backup", options.label}, {"volume", v.name}, {"error", e.what()}});
        else {
          out.problems.push_back({&v, true, e.what()});
          continue;
        }
      }
    }
    if (!opened.fs && !userspace) {
      out.problems.push_back({&v, false, v.note.empty() ? "no reader for this type yet" : v.note});
      continue;
    }
    if (!opened.fs) {
      try {
        opened.fs = open_filesystem(v.type, v.device, where, options.fs_open);
        opened.backend = "userspace";
      } catch (const Error& e) {  // a damaged volume: the rest of the backup is still served
        out.problems.push_back({&v, true, e.what()});
        continue;
      }
    }
    opened.fs = with_paged_listings(std::move(opened.fs), options.fs_open.cache_budget,
                                    options.fs_open.max_listing_bytes);
    out.volumes.push_back(std::move(opened));
  }
  return out;
}

}  // namespace sendense
