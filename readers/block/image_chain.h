// Private to readers/block: one validation of an image and everything it
// names (qcow2 backing files of any declared format, VMDK extents), done by
// our code before any backend (our qcow2 reader or qemu-nbd) reads a file.
// Each link is opened once here (image_file.h); our reader reads through
// those descriptors, and qemu-nbd is given exactly the files and formats
// listed here: nothing is resolved or probed again.
#pragma once

#include <string>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/block/image_file.h"
#include "readers/block/qcow2_header.h"

namespace sendense::image_chain {

inline constexpr size_t kMaxDepth = 64;

struct Link {
  ChainLink info;        // public description (canonical path, format, ...)
  std::string requested; // the name resolved to info.path (the top's path as given; backing: folder + stored name)
  std::string display;   // what errors name: the path as given for the top, canonical below
  qcow2::Header header;  // qcow2 links only
  ImageFilePtr file;     // opened once here; readers read through it, never by name
};

// Resolves and validates the chain top-first (see read_image_chain in
// block_device.h for the rules). Throws Error naming the file at fault.
std::vector<Link> resolve(const std::string& path, ImageFormat format, const std::string& confine_root);

}  // namespace sendense::image_chain

namespace sendense {

// Our qcow2 reader (qcow2_image.cpp) over a resolved chain of qcow2 levels
// with an optional raw base, read through the links' descriptors.
BlockDevicePtr open_qcow2_chain(std::vector<image_chain::Link> links, CacheBudgetPtr budget = nullptr);

}  // namespace sendense

namespace sendense::image_chain {

}  // namespace sendense::image_chain
