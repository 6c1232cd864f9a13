// Test and diagnostics view of the ext reader's file-map cache (private to
// readers/fs/ext/ and its tests; not part of the Filesystem interface).
#pragma once

#include <cstddef>
#include <cstdint>

#include "readers/fs/filesystem.h"

namespace sendense::ext {

struct FileMapCacheStats {
  size_t files = 0;     // run maps kept
  size_t weight = 0;    // their runs (plus one per file), in total
  uint64_t hits = 0;    // open()s answered from the cache
  uint64_t misses = 0;  // open()s that had to map the file
};

// `fs` must come from open_ext_filesystem; throws Error(EINVAL) otherwise.
FileMapCacheStats file_map_cache_stats(Filesystem& fs);

}  // namespace sendense::ext
