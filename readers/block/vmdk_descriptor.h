// Private to readers/block: what we check in a VMDK (and a VHDX) before
// qemu opens it.
// A VMDK's descriptor names further files (extents) and possibly a parent
// disk; those names are guest- or tool-controlled data, so we hold them to
// the same rules as qcow2 backing names (DESIGN.md, hostile input) before
// qemu-nbd ever sees the image.
#pragma once

#include <string>
#include <vector>

#include "readers/block/image_file.h"

namespace sendense::vmdk {

inline constexpr size_t kMaxDescriptorBytes = (1u << 20) - 1;  // what qemu reads of a text descriptor
inline constexpr size_t kMaxExtents = 1024;

// Checks the VMDK `file`, opened from `path` (canonical); its display names it in errors;
// `confine_root` (canonical, "" for none) is the folder every extent must
// stay inside. Returns the canonical paths of the extent files it names.
// Refused with Error(EOPNOTSUPP): VMDK3 ("COWD"), delta disks
// (parentFileNameHint), raw device mappings, extent names that are absolute,
// hold ".." components, a protocol prefix or NUL, a SPARSE extent of capacity
// 0 (qemu would open the extents of the descriptor it embeds). Extents are
// read as qemu reads them (its sscanf crosses lines; an embedded descriptor
// is read up to 1 MiB whatever its declared size). Refused with EACCES: an
// extent outside `confine_root` (also through a symlink); ENOENT: a missing
// extent; EIO: a descriptor that is not one, an embedded descriptor out of
// bounds, more than kMaxExtents extents.
std::vector<std::string> check_vmdk(const ImageFile& file, const std::string& path, const std::string& confine_root);

// Checks the VHDX magic ("vhdxfile"); Error(EIO) if absent. Refuses with
// Error(EOPNOTSUPP) a differencing disk (file parameters "has parent"): qemu
// cannot read one, and its parent would be a name from the image.
void check_vhdx(const ImageFile& file);

}  // namespace sendense::vmdk
