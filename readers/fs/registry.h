// Which filesystem types have a userspace reader, and opening one.
// Adding a reader: one folder under readers/fs/ plus one line in registry.cpp.
#pragma once

#include <string>

#include "readers/fs/filesystem.h"
#include "readers/volume/volume.h"

namespace sendense {

bool has_reader(FsType type);

// Opens the reader for `type` over `device`; `name` names the volume in
// errors ("backup-x/part1"). Throws Error(EOPNOTSUPP) if no reader exists,
// Error(EIO) if the filesystem is damaged.
FilesystemPtr open_filesystem(FsType type, BlockDevicePtr device, const std::string& name,
                              const FsOpenOptions& options = {});

}  // namespace sendense
