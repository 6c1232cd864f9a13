// inspect IMAGE: the backing chain, the reader serving it (libqcow, raw,
// qemu-nbd), the partition table and the volumes of one image, without the
// catalog. Opens everything read-only.
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "catalog/catalog.h"
#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/fs/registry.h"
#include "readers/volume/volume.h"
#include "tools/cli/commands.h"
#include "tools/cli/format.h"

namespace sendense::cli {

int inspect(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--format"}, {"--json"});
  expect_positionals(args, {"IMAGE"});
  const std::string& path = args.positional[0];
  // The same rule as the catalog: the name (or --format) decides, never the content.
  const FormatChoice choice = choose_format(path, format_option(args).value_or(""));
  if (choice.format.empty())
    throw UsageError("cannot tell the format of '" + path + "' from its name: give --format qcow2, raw, vmdk or vhdx");
  if (!choice.warning.empty()) std::cerr << "sendense-restore: warning: " << choice.warning << "\n";
  const std::string& format_name = choice.format;
  const ImageFormat format = image_format_from_string(format_name);
  // Backing files confined to the image's folder, as the daemon opens it.
  const std::string confine_root = std::filesystem::path(std::filesystem::absolute(path)).parent_path().string();

  std::vector<ChainLink> chain;
  BlockDevicePtr disk;
  DiskLayout layout;
  try {
    if (format != ImageFormat::raw) chain = read_image_chain(path, format, confine_root);
    disk = open_image(path, format, confine_root);
    layout = discover_volumes(disk);
  } catch (const Error& e) {
    // Name the image even when a lower layer named only a part of it.
    if (std::string(e.what()).find(path) == std::string::npos) rethrow_with_context(e, path);
    throw;
  }

  if (args.flag("--json")) {
    nlohmann::json j;
    j["image"] = path;
    j["format"] = format_name;
    j["size"] = disk->size();
    j["reader"] = disk->reader();
    j["chain"] = nlohmann::json::array();
    for (const auto& l : chain)
      j["chain"].push_back({{"path", l.path},
                            {"version", l.version},
                            {"format", to_string(l.format)},
                            {"virtual_size", l.virtual_size},
                            {"libqcow_limit", l.libqcow_limit.empty() ? nlohmann::json(nullptr)
                                                                      : nlohmann::json(l.libqcow_limit)},
                            {"backing_name", l.backing_name.empty() ? nlohmann::json(nullptr)
                                                                    : nlohmann::json(l.backing_name)}});
    nlohmann::json parts = nlohmann::json::array();
    for (const auto& p : layout.table.partitions)
      parts.push_back(
          {{"number", p.number}, {"offset", p.offset}, {"length", p.length}, {"type", p.type}, {"name", p.name}});
    j["partition_table"] = {{"scheme", layout.table.scheme}, {"partitions", parts}};
    j["warnings"] = layout.table.warnings;
    j["volumes"] = nlohmann::json::array();
    for (const auto& v : layout.volumes)
      j["volumes"].push_back({{"name", v.name},
                              {"partition", v.partition},
                              {"offset", v.offset},
                              {"length", v.length},
                              {"fs_type", to_string(v.type)},
                              {"has_reader", has_reader(v.type)}});
    std::cout << j.dump(2) << "\n";
    return 0;
  }

  std::cout << "image:   " << path << "\n"
            << "format:  " << format_name << "\n"
            << "size:    " << disk->size() << " bytes (" << human_size(disk->size()) << ")\n"
            << "reader:  " << disk->reader() << "\n";
  if (!chain.empty()) {
    std::cout << "\nchain (top first):\n";
    std::vector<std::vector<std::string>> rows{{"  #", "PATH", "FORMAT", "VERSION", "VIRTUAL SIZE", "BACKING", "NEEDS QEMU"}};
    for (size_t i = 0; i < chain.size(); ++i) {
      const auto& l = chain[i];
      rows.push_back({"  " + std::to_string(i), l.path, to_string(l.format), l.version ? std::to_string(l.version) : "-",
                      l.virtual_size ? human_size(l.virtual_size) : "-", l.backing_name.empty() ? "-" : l.backing_name,
                      l.libqcow_limit.empty() ? "-" : l.libqcow_limit});
    }
    std::cout << table(rows);
  }
  std::cout << "\npartition table: " << layout.table.scheme << "\n";
  if (!layout.table.partitions.empty()) {
    std::vector<std::vector<std::string>> rows{{"  #", "OFFSET", "LENGTH", "TYPE", "NAME"}};
    for (const auto& p : layout.table.partitions)
      rows.push_back({"  " + std::to_string(p.number), std::to_string(p.offset),
                      std::to_string(p.length) + " (" + human_size(p.length) + ")", p.type, p.name.empty() ? "-" : p.name});
    std::cout << table(rows);
  }
  for (const auto& w : layout.table.warnings) std::cout << "warning: " << w << "\n";
  std::cout << "\nvolumes:\n";
  if (layout.volumes.empty()) std::cout << "  (none)\n";
  else {
    std::vector<std::vector<std::string>> rows{{"  NAME", "OFFSET", "LENGTH", "FS", "READER"}};
    for (const auto& v : layout.volumes)
      rows.push_back({"  " + v.name, std::to_string(v.offset), human_size(v.length), to_string(v.type),
                      has_reader(v.type) ? "userspace" : "none"});
    std::cout << table(rows);
  }
  return 0;
}

}  // namespace sendense::cli
