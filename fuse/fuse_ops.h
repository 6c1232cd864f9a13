// The FUSE edge: libfuse low-level callbacks over a RestoreTree (passed as
// the session's userdata). Each op replies exactly once; sendense::Error
// becomes its errno, any other exception EIO, both logged.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

namespace sendense {

fuse_lowlevel_ops make_fuse_operations();

}  // namespace sendense
