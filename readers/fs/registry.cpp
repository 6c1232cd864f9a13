#include "readers/fs/registry.h"

#include "readers/common/error.h"
#include "readers/fs/ext/ext_filesystem.h"
#include "readers/fs/ntfs/ntfs_filesystem.h"
#include "readers/fs/xfs/xfs_filesystem.h"

namespace sendense {

bool has_reader(FsType type) {
  switch (type) {
    case FsType::ext2:
    case FsType::ext3:
    case FsType::ext4:
    case FsType::xfs:
    case FsType::ntfs:
      return true;
    default:
      return false;
  }
}

FilesystemPtr open_filesystem(FsType type, BlockDevicePtr device, const std::string& name,
                              const FsOpenOptions& options) {
  switch (type) {
    case FsType::ext2:
    case FsType::ext3:
    case FsType::ext4:
      return open_ext_filesystem(std::move(device), name, options);
    case FsType::xfs:
      return open_xfs_filesystem(std::move(device), name, options);
    case FsType::ntfs:
      return open_ntfs_filesystem(std::move(device), name, options);
    default:
      throw Error(EOPNOTSUPP, std::string("no reader for filesystem type ") + to_string(type), name);
  }
}

}  // namespace sendense
