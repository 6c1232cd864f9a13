// The state of an XFS log, found without replaying it (private to readers/fs/xfs/).
#pragma once

#include <string>

#include "readers/fs/filesystem.h"
#include "readers/fs/xfs/xfs_format.h"

namespace sendense::xfs {

// Finds the log head (the cycle-number boundary, as the kernel's
// xlog_find_head does without its torn-write refinements) and looks at the
// last record before it: an unmount record means "clean", anything else
// "skipped" (the log holds changes this reader does not replay). An
// external log gives "unsupported"; a log too damaged to find a record in
// gives "unknown". Never throws for log content; throws Error(EIO) only if
// the device cannot be read.
JournalReport inspect_log(const BlockDevice& device, const Superblock& sb);

}  // namespace sendense::xfs
