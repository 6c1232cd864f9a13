// From the volumes of a backup's disks to LV block devices (lvm.h): labels,
// the newest metadata copy per VG, PVs matched by uuid, segments mapped.
#include <map>
#include <set>

#include "readers/common/error.h"
#include "readers/volume/lvm.h"

namespace sendense {

namespace {

constexpr uint64_t kSector = 512;

struct FoundLabel {
  size_t candidate;
  LvmLabel label;
};

BlockDevicePtr build_lv(const LvmVgMetadata& vg, const LvmLvMetadata& lv, const std::vector<BlockDevicePtr>& pv_devices,
                        const std::string& name) {
  const uint64_t extent = vg.extent_size * kSector;
  std::vector<BlockDevicePtr> parts;
  for (size_t k = 0; k < lv.segments.size(); ++k) {
    const LvmSegment& s = lv.segments[k];
    const uint64_t per_stripe = s.extent_count / s.stripes.size();
    std::vector<BlockDevicePtr> stripes;
    for (size_t i = 0; i < s.stripes.size(); ++i) {
      const LvmStripe& st = s.stripes[i];
      const LvmPvMetadata& pv = vg.pvs[st.pv];
      // parse_lvm_metadata kept every product below 2^63; assemble_lvm
      // checked that the PV's extents fit its device.
      stripes.push_back(make_slice(pv_devices[st.pv], pv.pe_start * kSector + st.first_pe * extent, per_stripe * extent,
                                   name + " segment" + std::to_string(k + 1) + " stripe" + std::to_string(i)));
    }
    parts.push_back(make_striped(std::move(stripes), s.stripe_size * kSector, name));
  }
  return make_concat(std::move(parts), name);
}

}  // namespace

LvmAssembly assemble_lvm(const std::vector<LvmPvCandidate>& candidates) {
  LvmAssembly out;
  std::vector<FoundLabel> labels;
  std::map<std::string, std::vector<size_t>> by_uuid;  // PV uuid -> candidates holding it
  uint64_t text_bytes = 0;  // metadata text held, all labels together
  for (size_t i = 0; i < candidates.size(); ++i) {
    try {
      auto label = read_lvm_label(*candidates[i].device);
      if (!label) continue;
      for (const auto& p : label->problems) out.errors.push_back(candidates[i].name + ": LVM " + p);
      uint64_t bytes = 0;
      for (const auto& t : label->metadata) bytes += t.size();
      if (bytes > kLvmMaxBackupText - text_bytes) {
        out.errors.push_back(candidates[i].name + ": LVM metadata not used: the PVs of this backup hold more than " +
                             std::to_string(kLvmMaxBackupText) + " bytes of metadata text");
        label->metadata.clear();
        bytes = 0;
      }
      text_bytes += bytes;
      by_uuid[label->uuid].push_back(i);
      labels.push_back(FoundLabel{i, std::move(*label)});
    } catch (const Error& e) {
      out.errors.push_back(candidates[i].name + ": LVM label: " + e.what());
      out.pvs.push_back(LvmPvFound{i, ""});
    }
  }

  // The newest copy of each VG's metadata (highest seqno), by VG id.
  std::map<std::string, LvmVgMetadata> newest;
  std::vector<std::string> order;  // VG ids in the order first seen: stable names and listing
  for (const FoundLabel& f : labels) {
    for (const std::string& text : f.label.metadata) {
      try {
        LvmVgMetadata vg = parse_lvm_metadata(text, candidates[f.candidate].name);
        auto it = newest.find(vg.id);
        if (it == newest.end()) {
          order.push_back(vg.id);
          newest.emplace(vg.id, std::move(vg));
        } else if (vg.seqno > it->second.seqno) {
          it->second = std::move(vg);
        }
      } catch (const Error& e) {
        out.errors.push_back(e.what());
      }
    }
  }

  std::map<size_t, std::string> vg_of_candidate;
  std::set<std::string> vg_names;
  for (const std::string& id : order) {
    const LvmVgMetadata& vg = newest.at(id);
    const std::string where = "VG " + vg.name;
    if (!vg_names.insert(vg.name).second) {
      out.errors.push_back(where + ": a second VG of this name (id " + vg.id + ") in the same backup is not served");
      continue;
    }
    std::vector<BlockDevicePtr> pv_devices(vg.pvs.size());
    std::vector<std::string> missing(vg.pvs.size());
    std::string fatal;
    for (size_t p = 0; p < vg.pvs.size() && fatal.empty(); ++p) {
      const LvmPvMetadata& pv = vg.pvs[p];
      auto it = by_uuid.find(pv.uuid);
      if (pv.missing || it == by_uuid.end()) {
        missing[p] = "PV " + pv.key + " (" + pv.uuid + ") missing";
        continue;
      }
      if (it->second.size() > 1) {
        missing[p] = "PV " + pv.key + " (" + pv.uuid + ") found on " + std::to_string(it->second.size()) +
                     " volumes (cloned disk?)";
        continue;
      }
      const size_t c = it->second.front();
      const BlockDevicePtr& dev = candidates[c].device;
      const uint64_t end = (pv.pe_start + pv.pe_count * vg.extent_size) * kSector;
      if (end > dev->size()) {
        fatal = "PV " + pv.key + " on " + candidates[c].name + ": extents end at byte " + std::to_string(end) +
                ", beyond the " + std::to_string(dev->size()) + " bytes of the volume";
        continue;
      }
      pv_devices[p] = dev;
      vg_of_candidate[c] = vg.name;
    }
    if (!fatal.empty()) {
      out.errors.push_back(where + ": " + fatal);
      continue;
    }
    for (const LvmLvMetadata& lv : vg.lvs) {
      if (!lv.visible) continue;  // pool data/metadata, mirror legs, snapshot stores: parts of other LVs
      LvmLogicalVolume r;
      r.vg = vg.name;
      r.name = lv.name;
      r.volume_name = lvm_volume_name(vg.name, lv.name);
      r.type = lv.type();
      uint64_t extents = 0;
      for (const auto& s : lv.segments) extents += s.extent_count;
      r.size = extents * vg.extent_size * kSector;
      if (r.type != "linear" && r.type != "striped") {
        r.problem = r.type + " LV: not supported yet";
      } else {
        for (const auto& s : lv.segments)
          for (const auto& st : s.stripes)
            if (!missing[st.pv].empty() && r.problem.empty()) r.problem = missing[st.pv];
      }
      if (r.problem.empty()) {
        try {
          r.device = build_lv(vg, lv, pv_devices, r.volume_name);
        } catch (const Error& e) {
          r.problem = e.what();
        }
      }
      out.lvs.push_back(std::move(r));
    }
  }
  for (const FoundLabel& f : labels) {
    auto it = vg_of_candidate.find(f.candidate);
    out.pvs.push_back(LvmPvFound{f.candidate, it == vg_of_candidate.end() ? "" : it->second});
  }
  return out;
}

}  // namespace sendense
