// BlockDevice: the one interface every reader above the image layer sees.
// A device is immutable for its lifetime (backups never change), so
// read_at is positional, const, and safe to call from many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "readers/common/cache_budget.h"

namespace sendense {

class ImageFile;

// Where a stretch of a device's bytes is stored: `length` bytes of `file`
// from `offset`, or zeros (file == nullptr).
struct Extent {
  const ImageFile* file = nullptr;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Appends to `out`, merged with the last extent when it continues it.
void append_extent(std::vector<Extent>& out, const ImageFile* file, uint64_t offset, uint64_t length);

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  // Size in bytes.
  virtual uint64_t size() const = 0;

  // Fills `buf` with the bytes at [offset, offset + buf.size()).
  // Throws Error(EIO) naming the device and offset when the range is past
  // the end or the underlying image cannot be read. Thread-safe.
  virtual void read_at(uint64_t offset, std::span<std::byte> buf) const = 0;

  // Human-readable name for errors and logs ("/repo/a.qcow2", "... part1").
  virtual std::string describe() const = 0;

  // Which implementation reads the image ("raw", "qcow2" (ours), "qemu-nbd");
  // "" for devices layered over another one (slices, caches).
  virtual std::string reader() const { return {}; }

  // True once a read found an image file of this device changed since it
  // was opened (image_file.h): every later read fails, so whoever holds the
  // device should drop it and open the image again. Image devices only.
  virtual bool changed() const { return false; }
  // Checks the image files now (one fstat each; a change is logged as a
  // read would log it), then answers changed().
  virtual bool check_changed() const { return changed(); }

  // Where [offset, offset + length) is stored, appended to `out` in device
  // order: so that a process holding the image files but no parser (the
  // daemon, for a sandboxed worker's backup) can copy the bytes itself.
  // False (`out` then unspecified) where some byte is not stored as it
  // reads: compressed, rewritten on the way (an escaped journal block), or
  // read by another program (qemu-nbd). The range must lie in the device.
  virtual bool map(uint64_t offset, uint64_t length, std::vector<Extent>& out) const {
    (void)offset, (void)length, (void)out;
    return false;
  }
};

using BlockDevicePtr = std::shared_ptr<const BlockDevice>;

// Throws Error(EIO) naming `dev` and the offset unless [offset, offset +
// length) lies inside it. Every read_at starts with it.
void require_in_range(const BlockDevice& dev, uint64_t offset, uint64_t length);

// Image formats recorded in the catalog. The format is never guessed from a
// file's content when serving: a raw disk holding a qcow2 header stays raw.
enum class ImageFormat { raw, qcow2, vmdk, vhdx };
const char* to_string(ImageFormat f);
ImageFormat image_format_from_string(const std::string& s);  // throws Error(EINVAL)

// Opens a plain file O_RDONLY (pread), regular files only (image_file.h).
BlockDevicePtr open_raw_image(const std::string& path);

// One link of a backing chain, top (the image itself) first.
struct ChainLink {
  std::string path;            // canonical path of this image
  std::string backing_name;    // as stored in the header ("" for the base)
  int version = 0;             // qcow2 header version (2 or 3); 0 for other formats
  uint64_t virtual_size = 0;   // qcow2: from the header; 0 where only qemu knows it (vmdk, vhdx)
  ImageFormat format = ImageFormat::qcow2;  // as the referencing header declares it
  std::string native_limit;    // why our qcow2 reader cannot read this link ("" if it can): VMDK, VHDX
  std::vector<std::string> extents;  // VMDK: canonical paths of the extent files it names
};

// Opens a qcow2 image read-only with its whole backing chain through our
// own reader (qcow2_image.cpp): zlib and zstd compression, extended L2
// entries, v3 zero clusters, a raw base the header declares. Relative
// backing names resolve against the folder of the image naming them.
// Refused, with an Error naming the file: a missing backing file, a
// loop, a chain deeper than 64, a protocol or "json:" name, a VMDK or VHDX
// backing file, a path that escapes `confine_root` (when non-empty).
BlockDevicePtr open_qcow2_image(const std::string& path, const std::string& confine_root = {});

// Describes the chain without keeping it open (for inspect/import): every
// rule of read_image_chain, qcow2 at the top.
std::vector<ChainLink> read_qcow2_chain(const std::string& path, const std::string& confine_root = {});

// Validates an image of `format` and everything it names, top first, before
// any backend opens a file. Backing names resolve against the folder of the
// image naming them; a backing file's format is the one its referencing
// header declares (qcow2, raw, vmdk, vhdx), or qcow2 when undeclared and the
// file has the qcow2 magic. Refused, with an Error naming the file: a missing
// file, a loop, a chain deeper than 64, a protocol or "json:" name, a path
// that escapes `confine_root` (when non-empty), an undeclared non-qcow2 or
// unknown backing format, encryption, external data files, VMDK delta disks
// and VMDK extent names that escape (see vmdk_descriptor.h).
std::vector<ChainLink> read_image_chain(const std::string& path, ImageFormat format,
                                        const std::string& confine_root = {});

// For the sandboxed worker (issue 10): validates an image like open_image
// and returns every file of it, opened (image_file.h), with the names the
// chain's resolution asks for, so the worker can be handed the descriptors
// and resolve nothing itself. `reader` is what open_image would use.
struct ValidatedFile {
  std::string requested;   // the name resolution is given (raw: the path as given)
  std::string canonical;   // what it resolved to, the name ImageFile::open gets
  std::shared_ptr<const ImageFile> file;
};
struct ValidatedImage {
  std::vector<ValidatedFile> files;                          // top first
  std::vector<std::pair<std::string, std::string>> folders;  // confine root as given -> canonical
  std::string reader;                                        // "raw", "qcow2", "qemu-nbd"
};
ValidatedImage validate_image(const std::string& path, ImageFormat format, const std::string& confine_root = {});

// "qcow2" (our reader) when the chain is qcow2 levels over an optional raw
// base, "raw" for a raw image, "qemu-nbd" when it holds VMDK or VHDX: the
// reader open_image will use.
std::string choose_reader(const std::vector<ChainLink>& chain);

// Opens a validated chain (read_image_chain) through qemu-nbd; see nbd_image.h.
BlockDevicePtr open_nbd_image(const std::vector<ChainLink>& chain, const std::string& display);

// Reads only the backing file name stored in a qcow2 header ("" if none).
// Cheap: no chain is opened. Throws Error(EIO) if `path` is not qcow2.
std::string read_qcow2_backing_name(const std::string& path);

// True if the file starts with the qcow2 magic "QFI\xfb".
bool has_qcow2_magic(const std::string& path);

// How a chain choose_reader gives to qemu-nbd is opened: open_nbd_image in
// the daemon and the CLI; none in the sandboxed worker, which runs no qemu
// and so need not load libnbd (and the TLS and XML libraries it brings) on
// every attach.
using QemuOpener = BlockDevicePtr (*)(const std::vector<ChainLink>& chain, const std::string& display);

// Opens an image of `format` with the reader choose_reader picks; a chain
// for qemu-nbd with no `qemu` opener is refused (Error ENOTSUP). Our qcow2
// reader keeps its inflated clusters in `budget` (the backup's; null: its
// own cap only).
BlockDevicePtr open_image(const std::string& path, ImageFormat format, const std::string& confine_root = {},
                          QemuOpener qemu = nullptr, CacheBudgetPtr budget = nullptr);

// A window [offset, offset + length) over `parent` (a partition, an LV).
// Throws Error(EINVAL) if the window does not fit inside the parent.
BlockDevicePtr make_slice(BlockDevicePtr parent, uint64_t offset, uint64_t length, const std::string& name);

// `parts` end to end (an LV of several segments); empty parts are dropped.
// A single part is returned as is. Throws Error(EINVAL) if none is left.
BlockDevicePtr make_concat(std::vector<BlockDevicePtr> parts, const std::string& name);

// Striping over equal-sized `stripes` in chunks of `chunk_size` bytes (an
// LVM striped segment): chunk c of the result is chunk c / n of stripe
// c % n. A single stripe is returned as is. Throws Error(EINVAL) unless
// every stripe has the same size, a multiple of `chunk_size`.
BlockDevicePtr make_striped(std::vector<BlockDevicePtr> stripes, uint64_t chunk_size, const std::string& name);

// A read cache of `capacity` aligned chunks of `chunk_size` bytes over
// `parent` (least recently used evicted; charged to `budget` when given);
// reads larger than a few chunks go straight through. For metadata paths;
// thread-safe.
BlockDevicePtr make_block_cache(BlockDevicePtr parent, size_t chunk_size, size_t capacity,
                                CacheBudgetPtr budget = nullptr);

}  // namespace sendense
