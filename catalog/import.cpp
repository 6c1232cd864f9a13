// Repository import: every image under a folder becomes (or refreshes) a
// backup row; qcow2 backing names link incrementals to their parents.
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

// "json:{...}", "nbd://host/x", "http://..": qemu would open these as
// protocols. A backup's backing file is always a plain file name.
bool is_protocol_name(const std::string& name) {
  const size_t colon = name.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  const std::string scheme = name.substr(0, colon);
  return std::all_of(scheme.begin(), scheme.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '+' || c == '-' || c == '.' || c == '_';
  });
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
         a.kind == b.kind && a.created_at == b.created_at && a.size == b.size;
}

}  // namespace

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

  const bool magic = has_qcow2_magic(b.image_path);
  if (format.empty()) {
    b.format = magic ? "qcow2" : "raw";
  } else {
    b.format = to_string(image_format_from_string(format));
    if (b.format == "qcow2" && !magic) throw Error(EINVAL, "not a qcow2 image (no QFI\\xfb magic)", b.image_path);
  }

  const fs::path as_named(path);
  b.id = as_named.stem().string();
  if (auto facts = parse_backup_name(b.id)) {
    b.vm = facts->vm;
    b.created_at = facts->created_at;
  } else {
    b.vm = fs::absolute(as_named).parent_path().filename().string();
    b.created_at = static_cast<int64_t>(st.st_mtim.tv_sec);
  }

  b.kind = "full";
  if (b.format == "qcow2") {
    d.backing_name = read_qcow2_backing_name(b.image_path);
    if (!d.backing_name.empty()) {
      b.kind = "incremental";
      if (is_protocol_name(d.backing_name))
        throw Error(EINVAL, "backing file '" + d.backing_name + "' is a protocol name, refused", b.image_path);
      fs::path backing(d.backing_name);
      if (backing.is_relative()) backing = canonical.parent_path() / backing;
      const fs::path resolved = fs::canonical(backing, ec);
      if (!ec) d.backing_path = resolved.string();
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
  for (const fs::path& file : files) {
    const std::string where = file.string();
    try {
      const std::string ext = lower(file.extension().string());
      const bool magic = has_qcow2_magic(where);
      if (!magic) {
        if (ext == ".qcow2" || ext == ".qcow") throw Error(EIO, "named like a qcow2 image but has no qcow2 magic", where);
        if (ext != ".raw" && ext != ".img") continue;
      }
      Candidate c{describe_image(where, magic ? "qcow2" : "raw")};
      const std::string& path = c.desc.record.image_path;
      if (by_path.contains(path)) continue;  // a symlink to a file already seen
      if (auto other = by_id.find(c.desc.record.id); other != by_id.end())
        throw Error(EEXIST,
                    "backup id '" + c.desc.record.id + "' already taken by " +
                        candidates[other->second].desc.record.image_path,
                    where);
      by_path.emplace(path, candidates.size());
      by_id.emplace(c.desc.record.id, candidates.size());
      candidates.push_back(std::move(c));
    } catch (const std::exception& e) {
      const std::string what = e.what();
      report.errors.push_back(what.find(where) != std::string::npos ? what : where + ": " + what);
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
      if (!c.desc.backing_name.empty()) {
        auto in_import = by_path.find(c.desc.backing_path);
        if (c.desc.backing_path.empty()) {
          report.warnings.push_back(where + ": backing file '" + c.desc.backing_name +
                                    "' not found; imported without parent");
        } else if (in_import != by_path.end()) {
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
