#include "readers/block/image_chain.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <set>

#include "readers/block/vmdk_descriptor.h"
#include "readers/common/error.h"

namespace sendense {

namespace image_chain {

namespace {

std::string canonical_or_throw(const std::string& path, const std::string& referenced_by, const std::string& stored) {
  if (const PassedImageFiles* passed = passed_image_files()) {
    // Worker mode: the daemon resolved every name of the chain already.
    auto it = passed->canonical.find(path);
    if (it != passed->canonical.end()) return it->second;
    throw Error(EACCES, "'" + path + "' was not passed in by the daemon (the worker resolves no name)",
                referenced_by.empty() ? path : referenced_by);
  }
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) {
    const int saved = errno;
    if (referenced_by.empty()) throw Error(saved, std::string("cannot open image: ") + std::strerror(saved), path);
    if (saved == ENOENT)
      throw Error(ENOENT, "backing file '" + path + "' (stored as '" + stored + "') does not exist", referenced_by);
    throw Error(saved, "backing file '" + path + "' (stored as '" + stored + "'): " + std::strerror(saved),
                referenced_by);
  }
  std::string out(resolved);
  std::free(resolved);
  return out;
}

std::string dirname_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// qemu's rule for "is this a protocol name": a ':' before any '/'.
bool has_protocol_prefix(const std::string& name) {
  const auto colon = name.find(':');
  if (colon == std::string::npos) return false;
  const auto slash = name.find('/');
  return slash == std::string::npos || colon < slash;
}

bool inside(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/');
}

// Opens a link of the chain (image_file.h: never blocks, regular files
// only); a backing file that is not one is named with the image naming it.
ImageFilePtr open_link(const std::string& path, const std::string& display, const std::string& referenced_by) {
  try {
    return ImageFile::open(path, display);
  } catch (const Error& e) {
    if (referenced_by.empty()) throw;
    throw Error(e.code(), "backing file '" + path + "': " + e.message(), referenced_by);
  }
}

// The format of the backing file `path` named by a qcow2 header declaring
// `declared` ("" when it declares none).
ImageFormat backing_format(const std::string& declared, const ImageFile& file, const std::string& path,
                           const std::string& name, const std::string& referenced_by) {
  if (declared.empty() || declared == "qcow2") {
    if (qcow2::has_magic(file)) return ImageFormat::qcow2;
    if (declared.empty())
      throw Error(EOPNOTSUPP, "backing file '" + path + "' is not a qcow2 image and the header declares no backing "
                              "format (a format is never guessed from content)", referenced_by);
    throw Error(EOPNOTSUPP, "backing file '" + path + "' is declared qcow2 but is not a qcow2 image", referenced_by);
  }
  if (declared == "raw") return ImageFormat::raw;
  if (declared == "vmdk") return ImageFormat::vmdk;
  if (declared == "vhdx") return ImageFormat::vhdx;
  throw Error(EOPNOTSUPP, "backing file '" + name + "' has format '" + declared +
                              "': only qcow2, raw, vmdk and vhdx backing files are supported", referenced_by);
}

}  // namespace

std::vector<Link> resolve(const std::string& path, ImageFormat top_format, const std::string& confine_root) {
  std::string root;
  if (!confine_root.empty() && passed_image_files()) {
    root = canonical_or_throw(confine_root, {}, {});
  } else if (!confine_root.empty()) {
    char* r = ::realpath(confine_root.c_str(), nullptr);
    if (r == nullptr) throw sys_error("cannot resolve repository folder", confine_root);
    root = r;
    std::free(r);
  }

  std::vector<Link> chain;
  std::set<std::string> seen;
  std::string next = path;          // path to open next
  ImageFormat format = top_format;  // its format
  std::string referenced_by;        // display name of the image naming it ("" for the top)
  std::string stored;               // its backing name as stored
  while (true) {
    Link link;
    link.requested = next;
    link.info.path = canonical_or_throw(next, referenced_by, stored);
    link.display = referenced_by.empty() ? path : link.info.path;
    if (!referenced_by.empty()) {
      if (!seen.insert(link.info.path).second)
        throw Error(ELOOP, "backing chain loops: '" + link.info.path + "' (stored as '" + stored +
                               "') is already part of the chain", referenced_by);
      if (!root.empty() && !inside(link.info.path, root))
        throw Error(EACCES, "backing file '" + link.info.path + "' (stored as '" + stored +
                                "') is outside the repository folder '" + root + "'", referenced_by);
      if (chain.size() >= kMaxDepth)
        throw Error(ELOOP, "backing chain deeper than " + std::to_string(kMaxDepth) + " images at '" +
                               link.info.path + "'", referenced_by);
      link.file = open_link(link.info.path, link.display, referenced_by);
      // The name was checked as a string; a folder swapped for a symlink
      // since then would open something else: check what was opened.
      if (!root.empty() && !inside(link.file->opened_path(), root))
        throw Error(EACCES, "backing file '" + link.info.path + "' (stored as '" + stored +
                                "') moved outside the repository folder '" + root + "' while it was opened",
                    referenced_by);
      format = backing_format(format == ImageFormat::qcow2 ? chain.back().header.backing_format : std::string(),
                              *link.file, link.info.path, stored, referenced_by);
    } else {
      seen.insert(link.info.path);
      link.file = open_link(link.info.path, link.display, referenced_by);
    }
    link.info.format = format;

    std::string name;  // the backing name this link stores
    switch (format) {
      case ImageFormat::qcow2: {
        link.header = qcow2::read_header(*link.file);
        qcow2::check_openable(link.header, link.display);
        link.info.version = static_cast<int>(link.header.version);
        link.info.virtual_size = link.header.virtual_size;
        link.info.backing_name = link.header.backing_name;
        name = link.header.backing_name;
        break;
      }
      case ImageFormat::raw: {
        link.info.virtual_size = link.file->size();
        break;
      }
      case ImageFormat::vmdk:
        // Extents are confined like backing files (to nothing when unconfined).
        link.info.extents = vmdk::check_vmdk(*link.file, link.info.path, root);
        link.info.native_limit = "VMDK image";
        break;
      case ImageFormat::vhdx:
        vmdk::check_vhdx(*link.file);
        link.info.native_limit = "VHDX image";
        break;
    }
    const std::string display = link.display;
    const std::string dir = dirname_of(link.info.path);
    chain.push_back(std::move(link));
    if (name.empty()) break;

    if (has_protocol_prefix(name))
      throw Error(EOPNOTSUPP, "backing file name '" + name + "' is a protocol or json: name (only plain files are allowed)",
                  display);
    next = name.front() == '/' ? name : dir + "/" + name;
    referenced_by = display;
    stored = name;
  }
  return chain;
}

}  // namespace image_chain

std::vector<ChainLink> read_image_chain(const std::string& path, ImageFormat format, const std::string& confine_root) {
  std::vector<ChainLink> out;
  for (auto& link : image_chain::resolve(path, format, confine_root)) out.push_back(std::move(link.info));
  return out;
}

ValidatedImage validate_image(const std::string& path, ImageFormat format, const std::string& confine_root) {
  ValidatedImage out;
  if (format == ImageFormat::raw) {
    out.reader = "raw";
    out.files.push_back({path, path, ImageFile::open(path, path)});
    return out;
  }
  if (!confine_root.empty()) {
    char* r = ::realpath(confine_root.c_str(), nullptr);
    if (r == nullptr) throw sys_error("cannot resolve repository folder", confine_root);
    out.folders.emplace_back(confine_root, r);
    std::free(r);
  }
  std::vector<ChainLink> chain;
  for (auto& link : image_chain::resolve(path, format, confine_root)) {
    chain.push_back(link.info);
    out.files.push_back({link.requested, link.info.path, link.file});
  }
  out.reader = choose_reader(chain);
  return out;
}

std::vector<ChainLink> read_qcow2_chain(const std::string& path, const std::string& confine_root) {
  return read_image_chain(path, ImageFormat::qcow2, confine_root);
}

std::string choose_reader(const std::vector<ChainLink>& chain) {
  if (chain.size() == 1 && chain.front().format == ImageFormat::raw) return "raw";
  for (const auto& link : chain)
    if (!link.native_limit.empty()) return "qemu-nbd";
  return "qcow2";
}

}  // namespace sendense
