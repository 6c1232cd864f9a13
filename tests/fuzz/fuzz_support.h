// Shared by the fuzz targets (tests/fuzz/*_fuzz.cpp): the "sparse image"
// input form, an in-memory BlockDevice over it, a file made from it, and the
// bounded walk of a Filesystem the filesystem targets share.
//
// Sparse form (what make-seeds.sh writes through sparse_image.py): images are
// mostly zeros, so an input is
//   "SPX1" | u64 LE virtual size | extent*
//   extent: u64 LE offset | u32 LE length | `length` bytes
//        or u64 LE offset | u32 LE (0x80000000 | length) | one fill byte
// expanded into an image of that size, zeros elsewhere, later extents
// overwriting earlier ones (a fill extent: `length` copies of the byte, as
// NTFS's $LogFile of 0xFF). A truncated last extent keeps the bytes present;
// extents past the size are clipped. Any input without the magic is the
// image itself, byte for byte, so plain mutations still reach everything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/fs/filesystem.h"
#include "readers/fs/paged_listing.h"

namespace sendense::fuzz {

// Largest virtual size a sparse input may declare (reads of an in-memory
// device cost only what they copy; files are sparse on tmpfs).
inline constexpr uint64_t kMaxVirtualSize = 1ull << 30;
// Extents of one input past this are ignored.
inline constexpr size_t kMaxExtents = 4096;

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  std::vector<std::byte> bytes;  // `length` bytes, unless fill
  bool fill = false;             // `length` copies of fill_byte
  std::byte fill_byte{0};
};

struct SparseImage {
  uint64_t size = 0;
  std::vector<Extent> extents;  // in input order (later ones win)
};

// Parses `data` as described above (never throws).
SparseImage parse_sparse(const uint8_t* data, size_t size);

// A read-only BlockDevice over a SparseImage.
BlockDevicePtr make_memory_device(SparseImage image, const std::string& name = "fuzz-image");

// A private folder for this process (under $TMPDIR, else /dev/shm or /tmp),
// created once, removed at exit.
const std::string& scratch_dir();

// Bytes of non-zero fill extents write_image_file writes, in all (the rest
// of such extents is left as a hole): the file is on tmpfs.
inline constexpr uint64_t kMaxFileFillBytes = 16u << 20;

// Writes the expanded image to `scratch_dir()/name` (holes stay holes) and
// returns its path. Aborts if the file cannot be written (not an input bug).
std::string write_image_file(const SparseImage& image, const std::string& name);

// Bounds of one walk: one input never runs long or reads much.
struct WalkLimits {
  size_t max_entries = 4096;          // directory entries visited in all
  size_t max_depth = 32;
  uint64_t max_file_bytes = 1u << 20; // read of one file
  uint64_t max_total_bytes = 8u << 20;
  size_t max_xattrs = 64;             // per inode
};

// readdir every directory from the root, lookup and getattr every entry,
// readlink symlinks, open/read/release regular files, listxattr and getxattr
// every name, statfs and journal(). sendense::Error from any call is an
// expected outcome for damaged input and is swallowed per call; anything
// else (another exception, a sanitizer report) is a finding.
void walk(Filesystem& fs, const WalkLimits& limits = {});

// The filesystem targets' whole body: the input as a sparse image, opened
// by `open(device, name)` as the engine opens it; a refusal (Error) is the
// expected answer to a damaged image, an opened volume is walked.
template <typename Open>
int open_and_walk(const uint8_t* data, size_t size, const std::string& name, Open&& open) {
  BlockDevicePtr dev = make_memory_device(parse_sparse(data, size), name);
  FilesystemPtr fs;
  try {
    fs = open(dev, name);
  } catch (const Error&) {
    return 0;
  }
  walk(*with_paged_listings(fs));  // as the engine serves it: shown names, pages
  return 0;
}

}  // namespace sendense::fuzz
