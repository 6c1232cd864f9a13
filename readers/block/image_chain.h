// Private to readers/block: one validation of an image and everything it
// names (qcow2 backing files of any declared format, VMDK extents), done by
// our code before any backend (libqcow or qemu-nbd) opens a file. The
// backends then open exactly the files listed here, with the formats listed
// here: nothing is resolved or probed again.
#pragma once

#include <string>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/block/qcow2_header.h"

namespace sendense::image_chain {

inline constexpr size_t kMaxDepth = 64;

struct Link {
  ChainLink info;        // public description (canonical path, format, ...)
  std::string display;   // what errors name: the path as given for the top, canonical below
  qcow2::Header header;  // qcow2 links only
};

// Resolves and validates the chain top-first (see read_image_chain in
// block_device.h for the rules). Throws Error naming the file at fault.
std::vector<Link> resolve(const std::string& path, ImageFormat format, const std::string& confine_root);

}  // namespace sendense::image_chain
