// A backup disk exposed to the kernel as a plain file: qemu-storage-daemon
// opens the validated image chain read-only (every file pinned by a json
// blockdev, formats as declared: nothing probed or resolved by qemu), puts a
// throwaway qcow2 overlay above it and exports the overlay as a raw file
// through its FUSE export. Loop devices over that file are writable, so the
// kernel can replay ext3/4 and XFS journals into the overlay while the images
// stay untouched. The overlay lives in the backup's private staging folder
// and is deleted at detach.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "readers/block/block_device.h"

namespace sendense {
class ChildProcess;
}

namespace sendense::kernel {

class ImageExport {
 public:
  // `folder` is the backup's private staging folder; `name` a file-name-safe
  // label of the disk ("disk0"). Throws Error (EOPNOTSUPP for chains whose
  // size only qemu knows: VMDK, VHDX).
  ImageExport(const std::string& image, ImageFormat format, const std::string& confine_root,
              const std::string& folder, const std::string& name);
  ~ImageExport();  // stops qemu, unmounts the export, deletes export and overlay; logs, never throws
  ImageExport(const ImageExport&) = delete;
  ImageExport& operator=(const ImageExport&) = delete;

  const std::string& path() const { return export_path_; }
  uint64_t size() const { return size_; }

 private:
  std::string image_;
  std::string export_path_;
  std::string overlay_path_;
  uint64_t size_ = 0;
  std::unique_ptr<ChildProcess> qsd_;
};

}  // namespace sendense::kernel
