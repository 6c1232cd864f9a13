// Repository import: every image under a folder becomes (or refreshes) a
// backup row; the format comes from the file name, never from content;
// backing chains (and VMDK extents) are validated as the daemon opens them
// and link incrementals to their parents.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string_view>
#include <map>
#include <set>

#include "catalog/catalog.h"
#include "readers/block/block_device.h"
#include "readers/common/error.h"

namespace sendense {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

struct NameFacts {
  std::string vm;
  int64_t created_at = 0;
};

// "backup-<vm>-<YYYYMMDDhhmmss>" (vm may hold dashes). nullopt otherwise.
// Parsed by hand: GCC 12's <regex> trips -Wmaybe-uninitialized under -O2 with
// the sanitizers, and the shape is simple.
std::optional<NameFacts> parse_backup_name(const std::string& stem) {
  constexpr std::string_view prefix = "backup-";
  constexpr size_t digits = 14;
  if (stem.size() < prefix.size() + 2 + digits || stem.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const size_t dash = stem.size() - digits - 1;
  if (stem[dash] != '-' || dash <= prefix.size()) return std::nullopt;
  const std::string d = stem.substr(dash + 1);
  if (!std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  const std::string iso = d.substr(0, 4) + "-" + d.substr(4, 2) + "-" + d.substr(6, 2) + "T" + d.substr(8, 2) + ":" +
                          d.substr(10, 2) + ":" + d.substr(12, 2) + "Z";
  const auto t = parse_iso8601(iso);
  if (!t) return std::nullopt;
  return NameFacts{stem.substr(prefix.size(), dash - prefix.size()), *t};
}

bool same_content(const BackupRecord& a, const BackupRecord& b) {
  return a.vm == b.vm && a.image_path == b.image_path && a.format == b.format && a.parent_id == b.parent_id &&
         a.kind == b.kind && a.created_at == b.created_at && a.size == b.size && a.all_disks() == b.all_disks();
}

// "<backup-id>-disk<K>" -> (backup-id, K): one disk of a multi-disk backup.
std::optional<std::pair<std::string, uint32_t>> split_disk_name(const std::string& stem) {
  const size_t at = stem.rfind("-disk");
  if (at == std::string::npos || at == 0) return std::nullopt;
  const std::string digits = stem.substr(at + 5);
  if (digits.empty() || digits.size() > 4 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::make_pair(stem.substr(0, at), static_cast<uint32_t>(std::stoul(digits)));
}

}  // namespace

FormatChoice choose_format(const std::string& path, const std::string& requested) {
  FormatChoice c;
  if (requested.empty()) {
    const std::string ext = lower(fs::path(path).extension().string());
    if (ext == ".qcow2" || ext == ".qcow") c.format = "qcow2";
    else if (ext == ".raw" || ext == ".img") c.format = "raw";
    else if (ext == ".vmdk") c.format = "vmdk";
    else if (ext == ".vhdx") c.format = "vhdx";
    else return c;  // not an image by its name
  } else {
    c.format = to_string(image_format_from_string(requested));
  }
  if (c.format == "vmdk" || c.format == "vhdx") return c;  // checked by read_image_chain
  const bool magic = has_qcow2_magic(path);
  if (c.format == "qcow2" && !magic)
    throw Error(EINVAL, "named or recorded as qcow2 but has no qcow2 magic (QFI\\xfb)", path);
  if (c.format == "raw" && magic)
    c.warning = path + ": starts with a qcow2 header but is served as raw (its header and any backing file it "
                       "names are ignored)";
  return c;
}

ImageDescription describe_image(const std::string& path, const std::string& format) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw sys_error("cannot stat image", path);
  if (!S_ISREG(st.st_mode)) throw Error(EINVAL, "not a regular file", path);
  std::error_code ec;
  const fs::path canonical = fs::canonical(path, ec);
  if (ec) throw Error(ec.value(), "cannot resolve path: " + ec.message(), path);

  ImageDescription d;
  BackupRecord& b = d.record;
  b.image_path = canonical.string();
  b.size = static_cast<uint64_t>(st.st_size);

  FormatChoice choice = choose_format(path, format);
  if (choice.format.empty())
    throw Error(EINVAL,
                "cannot tell the image format from the file name (.qcow2/.qcow, .raw/.img, .vmdk, .vhdx); give "
                "the format (qcow2, raw, vmdk or vhdx)",
                path);
  b.format = choice.format;
  if (!choice.warning.empty()) d.warnings.push_back(choice.warning);

  const fs::path as_named(path);
  b.id = as_named.stem().string();
  // A disk of a multi-disk backup ("<backup-id>-disk<K>") tells its vm and
  // time through the backup id.
  const auto disk_name = split_disk_name(b.id);
  if (auto facts = parse_backup_name(disk_name ? disk_name->first : b.id)) {
    b.vm = facts->vm;
    b.created_at = facts->created_at;
  } else {
    b.vm = fs::absolute(as_named).parent_path().filename().string();
    b.created_at = static_cast<int64_t>(st.st_mtim.tv_sec);
  }

  b.kind = "full";
  if (b.format != "raw") {
    // The daemon opens the image confined to its own folder
    // (fuse/attach_manager.cpp): refuse here whatever it would refuse there.
    const std::vector<ChainLink> chain =
        read_image_chain(path, image_format_from_string(b.format), canonical.parent_path().string());
    d.backing_name = chain.front().backing_name;
    for (const ChainLink& link : chain) d.extents.insert(d.extents.end(), link.extents.begin(), link.extents.end());
    if (chain.size() > 1) {
      b.kind = "incremental";
      d.backing_path = chain[1].path;
    }
  }
  return d;
}

ImportReport import_repository(Catalog& catalog, const std::string& dir) {
  ImportReport report;
  std::error_code ec;
  const fs::path root = fs::canonical(dir, ec);
  if (ec) throw Error(ec.value(), "cannot open repository: " + ec.message(), dir);
  if (!fs::is_directory(root, ec)) throw Error(ENOTDIR, "repository is not a folder", dir);

  // 1. Walk. Symlinks to folders are listed but not followed; sorted for a
  //    stable outcome (which of two same-named files wins).
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  if (ec) throw Error(ec.value(), "cannot read repository: " + ec.message(), root.string());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) break;
    std::error_code fec;
    if (it->is_regular_file(fec)) files.push_back(it->path());
  }
  if (ec) report.errors.push_back(root.string() + ": walk stopped early: " + ec.message());
  std::sort(files.begin(), files.end());

  // 2. Describe every image.
  struct Candidate {
    ImageDescription desc;
    int state = 0;  // 0 new, 1 visiting, 2 done, 3 failed
  };
  std::vector<Candidate> candidates;
  std::map<std::string, size_t> by_path;  // canonical image path -> candidate
  std::map<std::string, size_t> by_id;
  std::vector<std::pair<std::string, std::string>> describe_errors;  // (canonical path, error)
  for (const fs::path& file : files) {
    const std::string where = file.string();
    try {
      if (choose_format(where).format.empty()) continue;  // not an image by its name
      Candidate c{describe_image(where)};  // the same rule, and the chain check of a qcow2
      const std::string& path = c.desc.record.image_path;
      if (by_path.contains(path)) continue;  // a symlink to a file already seen
      // Two files for one disk of a multi-disk backup are reported by the grouping below.
      if (auto other = by_id.find(c.desc.record.id); other != by_id.end() && !split_disk_name(c.desc.record.id))
        throw Error(EEXIST,
                    "backup id '" + c.desc.record.id + "' already taken by " +
                        candidates[other->second].desc.record.image_path,
                    where);
      by_path.emplace(path, candidates.size());
      by_id.emplace(c.desc.record.id, candidates.size());
      candidates.push_back(std::move(c));
    } catch (const std::exception& e) {
      const std::string what = e.what();
      std::error_code cec;
      describe_errors.emplace_back(fs::canonical(file, cec).string(),
                                   what.find(where) != std::string::npos ? what : where + ": " + what);
    }
  }

  // The extent files of a VMDK (name-s001.vmdk, name-flat.vmdk) are part of
  // that disk, not backups of their own (nor errors when they are not
  // images by themselves, as a flat extent is not).
  std::set<std::string> extent_files;
  for (const Candidate& c : candidates) extent_files.insert(c.desc.extents.begin(), c.desc.extents.end());
  for (Candidate& c : candidates)
    if (extent_files.contains(c.desc.record.image_path)) c.state = 2;
  for (auto& [path, error] : describe_errors)
    if (!extent_files.contains(path)) report.errors.push_back(std::move(error));
  // 2b. "<backup-id>-disk<K>" images are the disks of backup <backup-id>,
  //     in the order of K: one candidate per backup (disk 0 its image_path,
  //     every disk's path leading to it), a gap or a repeated K an error.
  {
    std::map<std::string, std::map<uint32_t, std::vector<size_t>>> groups;  // id -> K -> candidates
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (auto d = split_disk_name(candidates[i].desc.record.id)) groups[d->first][d->second].push_back(i);
    }
    std::vector<bool> drop(candidates.size(), false);
    std::vector<Candidate> merged;
    for (auto& [id, disks] : groups) {
      std::vector<size_t> members;
      std::string file_list;
      for (auto& [k, list] : disks)
        for (size_t i : list) {
          members.push_back(i);
          file_list += (file_list.empty() ? "" : ", ") + candidates[i].desc.record.image_path;
          drop[i] = true;
        }
      std::string problem;
      uint32_t expect = 0;
      for (auto& [k, list] : disks) {
        if (list.size() > 1) problem = "disk " + std::to_string(k) + " given by " + std::to_string(list.size()) + " files";
        else if (k != expect) problem = "disk " + std::to_string(expect) + " missing";
        if (!problem.empty()) break;
        ++expect;
      }
      if (problem.empty() && by_id.contains(id))
        problem = "backup id '" + id + "' also taken by " + candidates[by_id[id]].desc.record.image_path;
      if (!problem.empty()) {
        report.errors.push_back("multi-disk backup '" + id + "': " + problem + " (files: " + file_list + ")");
        continue;
      }
      Candidate c{candidates[disks.begin()->second.front()].desc};
      BackupRecord& r = c.desc.record;
      r.id = id;
      r.disks.clear();
      r.size = 0;
      for (auto& [k, list] : disks) {
        const ImageDescription& d = candidates[list.front()].desc;
        r.disks.push_back(BackupDisk{d.record.image_path, d.record.format});
        r.size += d.record.size;
        if (k > 0) c.desc.warnings.insert(c.desc.warnings.end(), d.warnings.begin(), d.warnings.end());
      }
      merged.push_back(std::move(c));
    }
    std::vector<Candidate> kept;
    for (size_t i = 0; i < candidates.size(); ++i)
      if (!drop[i]) kept.push_back(std::move(candidates[i]));
    for (auto& c : merged) kept.push_back(std::move(c));
    candidates = std::move(kept);
    by_path.clear();
    by_id.clear();
    for (size_t i = 0; i < candidates.size(); ++i) {
      for (const BackupDisk& d : candidates[i].desc.record.all_disks()) by_path.emplace(d.image_path, i);
      by_id.emplace(candidates[i].desc.record.id, i);
    }
  }

  // 3. Parents before children (foreign key), resolving backing files
  //    against this import first, then against the catalog.
  std::map<std::string, std::string> cataloged_by_path;  // image_path -> id
  for (const BackupRecord& b : catalog.list_backups()) cataloged_by_path.emplace(b.image_path, b.id);

  auto import_one = [&](auto& self, size_t index) -> void {
    Candidate& c = candidates[index];
    if (c.state >= 2) return;
    BackupRecord rec = c.desc.record;
    const std::string where = rec.image_path;
    if (c.state == 1) {
      c.state = 3;
      report.errors.push_back(where + ": backing chain loops");
      return;
    }
    c.state = 1;
    try {
      // describe_image validated the chain: the backing file exists, inside
      // the image's folder.
      if (!c.desc.backing_path.empty()) {
        auto in_import = by_path.find(c.desc.backing_path);
        if (in_import != by_path.end()) {
          self(self, in_import->second);
          if (c.state == 3) return;  // part of a loop, already reported
          const Candidate& parent = candidates[in_import->second];
          if (parent.state == 2)
            rec.parent_id = parent.desc.record.id;
          else
            report.warnings.push_back(where + ": backing file " + c.desc.backing_path +
                                      " could not be imported; imported without parent");
        } else if (auto known = cataloged_by_path.find(c.desc.backing_path); known != cataloged_by_path.end()) {
          rec.parent_id = known->second;
        } else {
          report.warnings.push_back(where + ": backing file " + c.desc.backing_path +
                                    " is not a cataloged backup; imported without parent");
        }
      }

      const auto existing = catalog.find_backup(rec.id);
      if (existing && existing->image_path != rec.image_path && fs::exists(existing->image_path))
        throw Error(EEXIST, "backup id '" + rec.id + "' is already cataloged for " + existing->image_path, where);
      if (existing) rec.status = existing->status;  // import does not manage status
      if (existing && same_content(*existing, rec)) {
        report.unchanged.push_back(rec.id);
      } else {
        catalog.upsert_backup(rec);
        (existing ? report.updated : report.added).push_back(rec.id);
      }
      cataloged_by_path[rec.image_path] = rec.id;
      report.warnings.insert(report.warnings.end(), c.desc.warnings.begin(), c.desc.warnings.end());
      c.state = 2;
    } catch (const std::exception& e) {
      c.state = 3;
      const std::string what = e.what();
      report.errors.push_back(what.find(where) != std::string::npos ? what : where + ": " + what);
    }
  };
  for (size_t i = 0; i < candidates.size(); ++i) import_one(import_one, i);

  // 4. Cataloged backups under this folder whose image is gone: kept, reported.
  const std::string prefix = root.string() + "/";
  for (const BackupRecord& b : catalog.list_backups()) {
    if (b.image_path.rfind(prefix, 0) == 0 && !fs::exists(b.image_path, ec)) report.missing.push_back(b.id);
  }
  return report;
}

}  // namespace sendense
