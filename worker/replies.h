// What the daemon takes from a worker (fuse/worker_client.cpp): every reply
// that carries more than bytes, decoded and checked here.
//
// A worker runs a hostile image's parsers, so once an image has taken one
// over, its replies can say anything. The daemon runs as root and serves
// every backup: what it keeps or hands the kernel from a reply must be
// what an honest worker could have said. A reply that is not is refused
// (Error EIO or EPROTO naming what was wrong), and the caller fails that
// request (a hello: the attach). Kept apart from the socket and the caches
// so that one fuzz target (tests/fuzz/worker_replies_fuzz.cpp) reaches
// every check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "readers/fs/filesystem.h"
#include "worker/protocol.h"

namespace sendense::worker {

// kSetup's answer. Volume names become folder names in the tree and, for
// the kernel backend, mount points: only names the engine makes (part1,
// disk0-part1, lvm-<vg>-<lv>) are taken.
Hello decode_checked_hello(std::span<const std::byte> reply, const std::string& backup_id);

// A map must cover its file exactly (a.size bytes, at most `max_extents`
// extents, a file of at most `max_size`), each extent inside the image
// file it names (sizes: the daemon's own descriptors').
void check_map(const Attr& a, const std::vector<MappedExtent>& map, std::span<const uint64_t> image_sizes,
               size_t max_extents, uint64_t max_size);

// An entry's attributes (times with nanoseconds below a second, as every
// reader gives them) with their map (checked).
struct AttrMap {
  Attr attr;
  std::vector<MappedExtent> map;
};
AttrMap get_checked_attr_map(Reader& r, std::span<const uint64_t> image_sizes);

// One kReaddir reply asked from `cookie` for at most `max` entries: names
// as the tree shows them (readers/fs/names.h: valid entry names, and "."
// and ".." as such), cookies past `cookie` and growing. (Types and inode
// numbers are the image's word, as they are in-process.)
struct PageEntry {
  DirEntry entry;
  std::optional<AttrMap> attr;  // a readdirplus page's
};
std::vector<PageEntry> decode_page(std::span<const std::byte> reply, uint64_t cookie, size_t max,
                                   std::span<const uint64_t> image_sizes);

// A list of extended attribute names (listxattr, each of xattr_names').
std::vector<std::string> get_xattr_names(Reader& r);

// read_files' answer for files of these sizes: each file's bytes (exactly
// its size), or nullopt where the worker could not read it.
std::vector<std::optional<std::vector<std::byte>>> decode_read_files(std::span<const std::byte> reply,
                                                                     std::span<const uint64_t> sizes);

}  // namespace sendense::worker
