#include "worker/replies.h"

#include "readers/common/error.h"
#include "readers/fs/names.h"

namespace sendense::worker {
namespace {

constexpr size_t kMaxEntryName = 1024;  // the kernel's FUSE_NAME_MAX (NTFS names reach 765 bytes)

void check_volume_name(const std::string& name, const std::string& backup_id) {
  const bool ok = !name.empty() && name.size() <= kMaxEntryName && name != "." && name != ".." &&
                  name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+_.-") ==
                      std::string::npos;
  if (!ok) throw Error(EPROTO, "worker protocol: the worker named a volume '" + name.substr(0, 64) + "'; refused", backup_id);
}

// Every reader clamps the nanoseconds of its times below a second: a
// time outside that no reader of the worker's backup gave.
void check_attr(const Attr& a) {
  auto ok = [](const timespec& t) { return t.tv_nsec >= 0 && t.tv_nsec <= 999'999'999; };
  if (!ok(a.atime) || !ok(a.mtime) || !ok(a.ctime))
    throw Error(EIO, "worker protocol: the attributes of inode " + std::to_string(a.ino) +
                         " hold a time no reader gives");
}

}  // namespace

Hello decode_checked_hello(std::span<const std::byte> reply, const std::string& backup_id) {
  Reader r(reply);
  Hello hello = decode_hello(r);
  if (!r.done()) throw Error(EPROTO, "worker protocol: the hello has bytes after its volumes", backup_id);
  for (const auto& v : hello.volumes) check_volume_name(v.name, backup_id);
  for (const auto& problem : hello.problems) check_volume_name(problem.name, backup_id);
  return hello;
}

void check_map(const Attr& a, const std::vector<MappedExtent>& map, std::span<const uint64_t> image_sizes,
               size_t max_extents, uint64_t max_size) {
  uint64_t total = 0;
  bool ok = map.size() <= max_extents && a.size <= max_size;
  for (const auto& e : map) {
    if (!ok) break;
    ok = e.length > 0 && e.length <= a.size - total &&
         (e.file == kZeros || (e.file < image_sizes.size() && e.offset <= image_sizes[e.file] &&
                               e.length <= image_sizes[e.file] - e.offset));
    total += e.length;
  }
  if (!ok || total != a.size)
    throw Error(EIO, "worker protocol: the map of inode " + std::to_string(a.ino) +
                         " does not cover the file inside the backup's image files");
}

AttrMap get_checked_attr_map(Reader& r, std::span<const uint64_t> image_sizes) {
  AttrMap out{get_attr(r), get_map(r)};
  check_attr(out.attr);
  if (!out.map.empty()) check_map(out.attr, out.map, image_sizes, kMapMaxExtents, kMapMaxSize);
  return out;
}

std::vector<PageEntry> decode_page(std::span<const std::byte> reply, uint64_t cookie, size_t max,
                                   std::span<const uint64_t> image_sizes) {
  Reader r(reply);
  // (An entry is at least a name's length, an inode, a type, a cookie and a flag.)
  std::vector<PageEntry> page(r.count(28));
  if (page.size() > max) throw Error(EIO, "worker protocol: a page of " + std::to_string(page.size()) +
                                              " entries where at most " + std::to_string(max) + " were asked");
  uint64_t last = cookie;
  for (auto& p : page) {
    p.entry = get_entry(r);
    const DirEntry& e = p.entry;
    if (r.u32() != 0) p.attr = get_checked_attr_map(r, image_sizes);
    // What shown_names makes; the kernel would refuse a whole batch for
    // one bad name, and lookups and the tree's caches key on them.
    if ((!valid_entry_name(e.name) && e.name != "." && e.name != "..") || e.name.size() > kMaxEntryName)
      throw Error(EIO, "worker protocol: a page holds an entry name that is not one (" +
                           std::to_string(e.name.size()) + " bytes)");
    // Cookies that do not grow would list forever.
    if (e.next <= last) throw Error(EIO, "worker protocol: a page's cookies do not advance");
    last = e.next;
  }
  if (!r.done()) throw Error(EIO, "worker protocol: a page has bytes after its entries");
  return page;
}

std::vector<std::string> get_xattr_names(Reader& r) {
  std::vector<std::string> names(r.count(4));
  for (auto& n : names) {
    n = r.str();
    // The kernel gets them as one list of NUL-ended names: a NUL inside
    // would make two. (Length is the image's word: ext's prefix and its
    // 255-byte suffix make up to 263 bytes, shown in process too.)
    if (n.empty() || n.find('\0') != std::string::npos)
      throw Error(EIO, "worker protocol: an extended attribute name that is not one");
  }
  return names;
}

std::vector<std::optional<std::vector<std::byte>>> decode_read_files(std::span<const std::byte> reply,
                                                                     std::span<const uint64_t> sizes) {
  Reader r(reply);
  std::vector<std::optional<std::vector<std::byte>>> out(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint32_t got = r.u32();
    if (got > 1) throw Error(EIO, "worker protocol: read_files flagged a file " + std::to_string(got));
    if (got == 0) continue;
    if (sizes[i] > kReadFilesMaxSize) throw Error(EIO, "worker protocol: read_files asked for a file too large");
    std::vector<std::byte> data(sizes[i]);
    r.raw(data.data(), data.size());
    out[i] = std::move(data);
  }
  if (!r.done()) throw Error(EIO, "worker protocol: read_files answered with more than was asked");
  return out;
}

}  // namespace sendense::worker
