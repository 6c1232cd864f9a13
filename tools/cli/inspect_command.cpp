// inspect IMAGE...: the backing chain, the reader serving it (qcow2, raw,
// qemu-nbd) and the partition table of each image (the disks of one backup,
// in disk order) and every volume they hold together, LVs included, without
// the catalog. Opens everything read-only.
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "catalog/catalog.h"
#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "readers/engine/open_backup.h"
#include "readers/fs/registry.h"
#include "readers/volume/volume.h"
#include "tools/cli/commands.h"
#include "tools/cli/format.h"

namespace sendense::cli {

namespace {

// What opening a volume's filesystem did about its journal; nullopt when
// there is no reader. A volume that fails to open says why instead.
struct JournalOutcome {
  std::optional<JournalReport> report;
  std::string error;
};

std::string journal_text(const JournalOutcome& j) {
  if (!j.error.empty()) return "error";
  if (!j.report) return "-";
  if (j.report->state == "replayed")
    return "replayed " + std::to_string(j.report->transactions) + " tx, " + std::to_string(j.report->blocks) + " blocks";
  return j.report->state;
}

struct InspectedDisk {
  std::string path;
  std::string format;
  std::vector<ChainLink> chain;
  BlockDevicePtr device;
};

InspectedDisk open_disk(const std::string& path, const std::optional<std::string>& requested) {
  // The same rule as the catalog: the name (or --format) decides, never the content.
  const FormatChoice choice = choose_format(path, requested.value_or(""));
  if (choice.format.empty())
    throw UsageError("cannot tell the format of '" + path + "' from its name: give --format qcow2, raw, vmdk or vhdx");
  if (!choice.warning.empty()) std::cerr << "sendense-restore: warning: " << choice.warning << "\n";
  InspectedDisk d;
  d.path = path;
  d.format = choice.format;
  const ImageFormat format = image_format_from_string(d.format);
  // Backing files confined to the image's folder, as the daemon opens it.
  const std::string confine_root = std::filesystem::path(std::filesystem::absolute(path)).parent_path().string();
  try {
    if (format != ImageFormat::raw) d.chain = read_image_chain(path, format, confine_root);
  } catch (const Error& e) {
    // Name the image even when a lower layer named only a part of it.
    if (std::string(e.what()).find(path) == std::string::npos) rethrow_with_context(e, path);
    throw;
  }
  d.device = open_disks({{path, format}}, open_nbd_image).devices.at(0);
  return d;
}

nlohmann::json chain_json(const std::vector<ChainLink>& chain) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& l : chain)
    out.push_back({{"path", l.path},
                   {"version", l.version},
                   {"format", to_string(l.format)},
                   {"virtual_size", l.virtual_size},
                   {"native_limit", l.native_limit.empty() ? nlohmann::json(nullptr) : nlohmann::json(l.native_limit)},
                   {"backing_name", l.backing_name.empty() ? nlohmann::json(nullptr) : nlohmann::json(l.backing_name)}});
  return out;
}

nlohmann::json table_json(const PartitionTable& t) {
  nlohmann::json parts = nlohmann::json::array();
  for (const auto& p : t.partitions)
    parts.push_back({{"number", p.number}, {"offset", p.offset}, {"length", p.length}, {"type", p.type}, {"name", p.name}});
  return {{"scheme", t.scheme}, {"partitions", parts}};
}

bool served(const Volume& v) { return v.device && has_reader(v.type); }

}  // namespace

int inspect(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--format"}, {"--json", "--no-replay"});
  const bool replay = !args.flag("--no-replay");
  if (args.positional.empty()) throw UsageError("missing IMAGE");
  const auto requested = format_option(args);
  std::vector<InspectedDisk> disks;
  for (const std::string& path : args.positional) disks.push_back(open_disk(path, requested));
  std::vector<BlockDevicePtr> devices;
  for (const auto& d : disks) devices.push_back(d.device);
  BackupLayout layout;
  try {
    layout = discover_backup(devices);
  } catch (const Error& e) {
    if (disks.size() == 1 && std::string(e.what()).find(disks[0].path) == std::string::npos)
      rethrow_with_context(e, disks[0].path);
    throw;
  }

  // Each volume with a reader is opened, as the daemon would, to report its
  // journal (replayed in memory, never written). The report is the output:
  // the reader's own log lines would only repeat it.
  const log::Level saved_level = log::level();
  log::set_level(log::Level::error);
  // One engine call per disk's label: volumes of a multi-disk backup are
  // named after the image holding them (disk 0 for an LV).
  std::vector<JournalOutcome> journals(layout.volumes.size());
  EngineOptions engine;
  engine.fs_open.replay_journal = replay;
  engine.label = disks[0].path;
  const OpenedVolumes opened = open_volumes(layout, engine);
  auto index_of = [&](const Volume* v) { return static_cast<size_t>(v - layout.volumes.data()); };
  for (const OpenedVolume& o : opened.volumes) journals[index_of(o.layout)].report = o.fs->journal();
  for (const VolumeProblem& p : opened.problems)
    if (p.failed) journals[index_of(p.layout)].error = p.reason;
  log::set_level(saved_level);

  if (args.flag("--json")) {
    // Disk 0 at the top level (as for a single image); every disk under "disks".
    nlohmann::json j;
    j["image"] = disks[0].path;
    j["format"] = disks[0].format;
    j["size"] = disks[0].device->size();
    j["reader"] = disks[0].device->reader();
    j["chain"] = chain_json(disks[0].chain);
    j["partition_table"] = table_json(layout.disks[0].table);
    j["disks"] = nlohmann::json::array();
    for (size_t k = 0; k < disks.size(); ++k)
      j["disks"].push_back({{"disk", k},
                            {"image", disks[k].path},
                            {"format", disks[k].format},
                            {"size", disks[k].device->size()},
                            {"reader", disks[k].device->reader()},
                            {"chain", chain_json(disks[k].chain)},
                            {"partition_table", table_json(layout.disks[k].table)}});
    j["warnings"] = layout.warnings;
    j["volumes"] = nlohmann::json::array();
    for (size_t i = 0; i < layout.volumes.size(); ++i) {
      const auto& v = layout.volumes[i];
      const JournalOutcome& jo = journals[i];
      nlohmann::json journal = nullptr;
      if (!jo.error.empty())
        journal = {{"error", jo.error}};
      else if (jo.report)
        journal = {{"state", jo.report->state},
                   {"transactions", jo.report->transactions},
                   {"blocks", jo.report->blocks},
                   {"note", jo.report->note}};
      j["volumes"].push_back({{"name", v.name},
                              {"disk", v.disk},
                              {"partition", v.partition},
                              {"offset", v.offset},
                              {"length", v.length},
                              {"fs_type", to_string(v.type)},
                              {"has_reader", served(v)},
                              {"note", v.note},
                              {"journal", journal}});
    }
    std::cout << j.dump(2) << "\n";
    return 0;
  }

  for (size_t k = 0; k < disks.size(); ++k) {
    const InspectedDisk& d = disks[k];
    if (disks.size() > 1) std::cout << (k ? "\n" : "") << "disk " << k << ":\n";
    std::cout << "image:   " << d.path << "\n"
              << "format:  " << d.format << "\n"
              << "size:    " << d.device->size() << " bytes (" << human_size(d.device->size()) << ")\n"
              << "reader:  " << d.device->reader() << "\n";
    if (!d.chain.empty()) {
      std::cout << "\nchain (top first):\n";
      std::vector<std::vector<std::string>> rows{
          {"  #", "PATH", "FORMAT", "VERSION", "VIRTUAL SIZE", "BACKING", "NEEDS QEMU"}};
      for (size_t i = 0; i < d.chain.size(); ++i) {
        const auto& l = d.chain[i];
        rows.push_back({"  " + std::to_string(i), l.path, to_string(l.format),
                        l.version ? std::to_string(l.version) : "-", l.virtual_size ? human_size(l.virtual_size) : "-",
                        l.backing_name.empty() ? "-" : l.backing_name, l.native_limit.empty() ? "-" : l.native_limit});
      }
      std::cout << table(rows);
    }
    const PartitionTable& t = layout.disks[k].table;
    std::cout << "\npartition table: " << t.scheme << "\n";
    if (!t.partitions.empty()) {
      std::vector<std::vector<std::string>> rows{{"  #", "OFFSET", "LENGTH", "TYPE", "NAME"}};
      for (const auto& p : t.partitions)
        rows.push_back({"  " + std::to_string(p.number), std::to_string(p.offset),
                        std::to_string(p.length) + " (" + human_size(p.length) + ")", p.type,
                        p.name.empty() ? "-" : p.name});
      std::cout << table(rows);
    }
  }
  for (const auto& w : layout.warnings) std::cout << "warning: " << w << "\n";
  std::cout << "\nvolumes:\n";
  if (layout.volumes.empty()) {
    std::cout << "  (none)\n";
  } else {
    std::vector<std::vector<std::string>> rows{{"  NAME", "OFFSET", "LENGTH", "FS", "READER", "JOURNAL", "NOTE"}};
    for (size_t i = 0; i < layout.volumes.size(); ++i) {
      const auto& v = layout.volumes[i];
      rows.push_back({"  " + v.name, std::to_string(v.offset), human_size(v.length), to_string(v.type),
                      served(v) ? "userspace" : "none", journal_text(journals[i]), v.note.empty() ? "-" : v.note});
    }
    std::cout << table(rows);
    for (size_t i = 0; i < layout.volumes.size(); ++i) {
      const JournalOutcome& jo = journals[i];
      if (!jo.error.empty()) std::cout << "  " << layout.volumes[i].name << ": " << jo.error << "\n";
      else if (jo.report && !jo.report->note.empty())
        std::cout << "  " << layout.volumes[i].name << ": journal " << jo.report->state << ": " << jo.report->note << "\n";
    }
  }
  return 0;
}

}  // namespace sendense::cli
