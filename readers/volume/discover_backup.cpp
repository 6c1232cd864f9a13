// A backup = several disks -> every volume with its name in the tree:
// partitions (prefixed by disk when there are several), then the LVs of VGs
// assembled from PVs found on any disk of the backup.
#include <set>

#include "readers/common/error.h"
#include "readers/volume/lvm.h"
#include "readers/volume/volume.h"

namespace sendense {

BackupLayout discover_backup(const std::vector<BlockDevicePtr>& disks) {
  if (disks.empty()) throw Error(EINVAL, "discover_backup: no disk");
  BackupLayout out;
  const bool multi = disks.size() > 1;
  std::set<std::string> names;
  for (size_t k = 0; k < disks.size(); ++k) {
    const std::string prefix = multi ? "disk" + std::to_string(k) + "-" : "";
    DiskLayout layout;
    try {
      layout = discover_volumes(disks[k]);
    } catch (const Error& e) {
      if (!multi) throw;
      rethrow_with_context(e, "disk" + std::to_string(k));
    }
    for (const auto& w : layout.table.warnings) out.warnings.push_back(prefix + w);
    for (Volume v : layout.volumes) {
      v.name = prefix + v.name;
      v.disk = static_cast<uint32_t>(k);
      names.insert(v.name);
      out.volumes.push_back(std::move(v));
    }
    out.disks.push_back(std::move(layout));
  }

  std::vector<LvmPvCandidate> candidates;
  std::vector<size_t> candidate_volume;
  for (size_t i = 0; i < out.volumes.size(); ++i) {
    if (out.volumes[i].type != FsType::lvm_pv) continue;
    candidates.push_back(LvmPvCandidate{out.volumes[i].device, out.volumes[i].name});
    candidate_volume.push_back(i);
  }
  if (candidates.empty()) return out;

  LvmAssembly lvm = assemble_lvm(candidates);
  for (auto& e : lvm.errors) out.warnings.push_back(std::move(e));
  for (const LvmPvFound& pv : lvm.pvs) {
    Volume& v = out.volumes[candidate_volume[pv.candidate]];
    v.note = pv.vg.empty() ? "lvm-pv (VG not readable)" : "lvm-pv of VG " + pv.vg;
  }
  for (LvmLogicalVolume& lv : lvm.lvs) {
    Volume v;
    v.name = lv.volume_name;
    v.length = lv.size;
    v.device = lv.device;
    v.note = lv.type + " LV";
    if (!lv.problem.empty()) v.note = lv.problem;
    if (!names.insert(v.name).second) {
      out.warnings.push_back(v.name + ": a second volume of this name is not served");
      continue;
    }
    if (v.device) {
      try {
        v.type = detect_filesystem(*v.device);
      } catch (const Error& e) {
        v.note = e.what();
        v.device.reset();
      }
    }
    out.volumes.push_back(std::move(v));
  }
  return out;
}

}  // namespace sendense
