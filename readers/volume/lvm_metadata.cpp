// VG metadata text -> LvmVgMetadata, validated (lvm.h). The text is what
// lvm2's lib/format_text/export.c writes:
//   <vg> { id = "..." seqno = N extent_size = S
//          physical_volumes { pv0 { id = "..." pe_start = P pe_count = C } ... }
//          logical_volumes { <lv> { status = [...] segment_count = K
//              segment1 { start_extent = 0 extent_count = E type = "striped"
//                         stripe_count = 1 [stripe_size = Z] stripes = [ "pv0", 0, ... ] } } } }
#include <algorithm>
#include <map>

#include "readers/common/error.h"
#include "readers/volume/lvm.h"
#include "readers/volume/lvm_config.h"

namespace sendense {

using lvm_detail::ConfigValue;

namespace {

constexpr size_t kMaxPvs = 4096;
constexpr size_t kMaxLvs = 4096;
constexpr size_t kMaxSegments = 65536;   // per LV
constexpr uint64_t kMaxStripes = 128;    // lvm2's limit (MAX_STRIPES)
constexpr uint64_t kMaxSectors = uint64_t{1} << 54;  // sizes in sectors, so that * 512 cannot overflow

[[noreturn]] void bad(const std::string& what, const std::string& where) { throw Error(EIO, what, where); }

// LVM names: [A-Za-z0-9+_.-], not starting with '-', not "." or "..", at most 128.
bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 128 || n[0] == '-' || n == "." || n == "..") return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '_' ||
           c == '.' || c == '-';
  });
}

const ConfigValue& need(const ConfigValue& section, std::string_view key, ConfigValue::Kind kind,
                        const std::string& where) {
  const ConfigValue* v = section.find(key);
  if (!v) bad("'" + std::string(key) + "' missing", where);
  if (v->kind != kind) bad("'" + std::string(key) + "' has the wrong type", where);
  return *v;
}

uint64_t need_count(const ConfigValue& section, std::string_view key, const std::string& where,
                    uint64_t max = kMaxSectors) {
  const ConfigValue& v = need(section, key, ConfigValue::Kind::integer, where);
  if (v.integer < 0 || static_cast<uint64_t>(v.integer) > max)
    bad("'" + std::string(key) + "' = " + std::to_string(v.integer) + " out of range", where);
  return static_cast<uint64_t>(v.integer);
}

std::string need_string(const ConfigValue& section, std::string_view key, const std::string& where) {
  return need(section, key, ConfigValue::Kind::string, where).text;
}

bool has_flag(const ConfigValue& section, std::string_view key, std::string_view flag) {
  const ConfigValue* v = section.find(key);
  if (!v || v->kind != ConfigValue::Kind::array) return false;
  return std::any_of(v->items.begin(), v->items.end(),
                     [&](const ConfigValue& i) { return i.kind == ConfigValue::Kind::string && i.text == flag; });
}

std::string without_dashes(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), '-'), s.end());
  return s;
}

LvmSegment parse_segment(const ConfigValue& seg, const LvmVgMetadata& vg, const std::map<std::string, size_t>& pv_index,
                         const std::string& where) {
  LvmSegment s;
  s.start_extent = need_count(seg, "start_extent", where);
  s.extent_count = need_count(seg, "extent_count", where);
  if (s.extent_count == 0) bad("extent_count is 0", where);
  s.type = need_string(seg, "type", where);
  if (s.type.empty() || s.type.size() > 64) bad("segment type of " + std::to_string(s.type.size()) + " characters", where);
  if (s.type != "striped") return s;  // other types are listed, not read: their fields are not needed

  const uint64_t count = need_count(seg, "stripe_count", where, kMaxStripes);
  if (count == 0) bad("stripe_count is 0", where);
  if (s.extent_count % count != 0)
    bad("extent_count " + std::to_string(s.extent_count) + " is not a multiple of stripe_count " + std::to_string(count),
        where);
  if (count > 1) {
    s.stripe_size = need_count(seg, "stripe_size", where);
    if (s.stripe_size == 0 || (s.stripe_size & (s.stripe_size - 1)) != 0 || vg.extent_size % s.stripe_size != 0)
      bad("stripe_size " + std::to_string(s.stripe_size) + " is not a power of two dividing the extent size", where);
  }
  const ConfigValue& list = need(seg, "stripes", ConfigValue::Kind::array, where);
  if (list.items.size() != 2 * count)
    bad("stripes lists " + std::to_string(list.items.size()) + " values for " + std::to_string(count) + " stripes",
        where);
  const uint64_t per_stripe = s.extent_count / count;
  for (size_t i = 0; i < count; ++i) {
    const ConfigValue& name = list.items[2 * i];
    const ConfigValue& pe = list.items[2 * i + 1];
    if (name.kind != ConfigValue::Kind::string || pe.kind != ConfigValue::Kind::integer || pe.integer < 0)
      bad("stripe " + std::to_string(i) + " is not a (PV name, extent) pair", where);
    auto it = pv_index.find(name.text);
    if (it == pv_index.end()) bad("stripe " + std::to_string(i) + " names unknown PV '" + name.text + "'", where);
    const LvmPvMetadata& pv = vg.pvs[it->second];
    const auto first = static_cast<uint64_t>(pe.integer);
    if (first > pv.pe_count || per_stripe > pv.pe_count - first)
      bad("stripe " + std::to_string(i) + " extents [" + std::to_string(first) + ", +" + std::to_string(per_stripe) +
              ") beyond the " + std::to_string(pv.pe_count) + " extents of " + name.text,
          where);
    s.stripes.push_back(LvmStripe{it->second, first});
  }
  return s;
}

}  // namespace

std::string LvmLvMetadata::type() const {
  if (snapshot_store) return "snapshot";
  bool striped = false;
  for (const auto& s : segments) {
    if (s.type != "striped") return s.type;
    if (s.stripes.size() > 1) striped = true;
  }
  return striped ? "striped" : "linear";
}

std::string lvm_volume_name(const std::string& vg, const std::string& lv) {
  auto doubled = [](const std::string& s) {
    std::string out;
    for (char c : s) {
      out += c;
      if (c == '-') out += '-';
    }
    return out;
  };
  return "lvm-" + doubled(vg) + "-" + doubled(lv);
}

LvmVgMetadata parse_lvm_metadata(std::string_view text, const std::string& where) {
  const ConfigValue root = lvm_detail::parse_config(text, where);
  // The VG is the one top-level section; the rest are scalars (contents, version, ...).
  const ConfigValue* vgs = nullptr;
  LvmVgMetadata vg;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    if (root.items[i].kind != ConfigValue::Kind::section) continue;
    if (vgs) bad("more than one VG section in one metadata text", where);
    vgs = &root.items[i];
    vg.name = root.keys[i];
  }
  if (!vgs) bad("no VG section in the metadata text", where);
  if (!valid_name(vg.name)) bad("invalid VG name '" + vg.name + "'", where);
  const std::string vg_where = where + " VG " + vg.name;
  vg.id = without_dashes(need_string(*vgs, "id", vg_where));
  vg.seqno = need_count(*vgs, "seqno", vg_where, UINT64_MAX >> 1);
  vg.extent_size = need_count(*vgs, "extent_size", vg_where, uint64_t{1} << 32);
  if (vg.extent_size == 0) bad("extent_size is 0", vg_where);

  std::map<std::string, size_t> pv_index;
  const ConfigValue& pvs = need(*vgs, "physical_volumes", ConfigValue::Kind::section, vg_where);
  if (pvs.keys.size() > kMaxPvs) bad("more than " + std::to_string(kMaxPvs) + " PVs", vg_where);
  for (size_t i = 0; i < pvs.keys.size(); ++i) {
    const std::string pv_where = vg_where + " PV " + pvs.keys[i];
    if (pvs.items[i].kind != ConfigValue::Kind::section) bad("not a section", pv_where);
    LvmPvMetadata pv;
    pv.key = pvs.keys[i];
    pv.uuid = without_dashes(need_string(pvs.items[i], "id", pv_where));
    if (pv.uuid.size() != 32) bad("uuid '" + pv.uuid + "' is not 32 characters", pv_where);
    pv.pe_start = need_count(pvs.items[i], "pe_start", pv_where);
    pv.pe_count = need_count(pvs.items[i], "pe_count", pv_where);
    if (pv.pe_count > kMaxSectors / vg.extent_size || pv.pe_start > kMaxSectors - pv.pe_count * vg.extent_size)
      bad("extents end beyond 2^54 sectors", pv_where);
    pv.missing = has_flag(pvs.items[i], "flags", "MISSING") || has_flag(pvs.items[i], "status", "MISSING");
    if (!pv_index.emplace(pv.key, vg.pvs.size()).second) bad("PV listed twice", pv_where);
    vg.pvs.push_back(std::move(pv));
  }

  const ConfigValue* lvs = vgs->find("logical_volumes");
  if (lvs && lvs->kind != ConfigValue::Kind::section) bad("'logical_volumes' is not a section", vg_where);
  if (lvs && lvs->keys.size() > kMaxLvs) bad("more than " + std::to_string(kMaxLvs) + " LVs", vg_where);
  // Every striped area in the VG, per PV, to refuse two LVs on one extent.
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> used(vg.pvs.size());
  for (size_t i = 0; lvs && i < lvs->keys.size(); ++i) {
    const ConfigValue& lvs_i = lvs->items[i];
    LvmLvMetadata lv;
    lv.name = lvs->keys[i];
    const std::string lv_where = vg_where + " LV " + lv.name;
    if (!valid_name(lv.name)) bad("invalid LV name", lv_where);
    if (std::any_of(vg.lvs.begin(), vg.lvs.end(), [&](const LvmLvMetadata& o) { return o.name == lv.name; }))
      bad("LV listed twice", lv_where);
    if (lvs_i.kind != ConfigValue::Kind::section) bad("not a section", lv_where);
    lv.visible = has_flag(lvs_i, "status", "VISIBLE");
    const uint64_t count = need_count(lvs_i, "segment_count", lv_where, kMaxSegments);
    if (count == 0) bad("segment_count is 0", lv_where);
    uint64_t next = 0;
    for (uint64_t k = 1; k <= count; ++k) {
      const std::string key = "segment" + std::to_string(k);
      const std::string seg_where = lv_where + " " + key;
      const ConfigValue& seg = need(lvs_i, key, ConfigValue::Kind::section, lv_where);
      LvmSegment s = parse_segment(seg, vg, pv_index, seg_where);
      if (s.start_extent != next)
        bad("starts at extent " + std::to_string(s.start_extent) + ", expected " + std::to_string(next) +
                " (segments must be contiguous)", seg_where);
      if (s.extent_count > kMaxSectors - next) bad("LV longer than 2^54 extents", seg_where);
      next += s.extent_count;
      const uint64_t per_stripe = s.stripes.empty() ? 0 : s.extent_count / s.stripes.size();
      for (const LvmStripe& st : s.stripes) used[st.pv].emplace_back(st.first_pe, per_stripe);
      lv.segments.push_back(std::move(s));
    }
    if (next > kMaxSectors / vg.extent_size) bad("LV larger than 2^54 sectors", lv_where);
    vg.lvs.push_back(std::move(lv));
  }
  // A classic snapshot is a hidden LV with a "snapshot" segment naming its
  // (visible, striped) copy-on-write store: the store is what users see as
  // the snapshot, and its bytes are no filesystem.
  for (size_t i = 0; lvs && i < lvs->keys.size(); ++i) {
    for (size_t k = 0; k < lvs->items[i].keys.size(); ++k) {
      const ConfigValue& seg = lvs->items[i].items[k];
      if (seg.kind != ConfigValue::Kind::section) continue;
      const ConfigValue* type = seg.find("type");
      const ConfigValue* cow = seg.find("cow_store");
      if (!type || type->text != "snapshot" || !cow || cow->kind != ConfigValue::Kind::string) continue;
      for (LvmLvMetadata& lv : vg.lvs)
        if (lv.name == cow->text) lv.snapshot_store = true;
    }
  }
  for (size_t p = 0; p < used.size(); ++p) {
    auto& areas = used[p];
    std::sort(areas.begin(), areas.end());
    for (size_t k = 1; k < areas.size(); ++k)
      if (areas[k - 1].first + areas[k - 1].second > areas[k].first)
        bad("two LVs use extent " + std::to_string(areas[k].first) + " of " + vg.pvs[p].key, vg_where);
  }
  return vg;
}

}  // namespace sendense
