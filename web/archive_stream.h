// A folder of the tree streamed as an archive with libarchive: zip (zip64
// when a member needs it), tar (pax: owners, modes, nanosecond times,
// symlinks, xattrs) or tar.zst. The walk (plan) runs first so the total is
// known before the first byte; the stream then reads each file through the
// tree, beneath the folder, and hands the archive's bytes to a writer that
// reports a closed client.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "web/jobs.h"
#include "web/tree_access.h"

namespace sendense::web {

struct ArchiveMember {
  std::string name;    // in the archive: "<folder>/sub/file"
  std::string inner;   // beneath the folder: "sub/file" ("" = the folder itself)
  struct stat st {};
  std::string target;  // symlinks
};

struct ArchivePlan {
  std::vector<ArchiveMember> members;  // parents before children
  uint64_t files = 0;                  // regular files
  uint64_t bytes = 0;                  // their sizes
};

// "zip", "tar" or "tar.zst"; false for anything else.
bool valid_archive_format(const std::string& format);
std::string archive_content_type(const std::string& format);

// Walks `folder_fd` (an O_PATH folder) with every folder opened beneath it.
// `top` is the members' first component (the folder's name).
ArchivePlan plan_archive(const TreeAccess& tree, int folder_fd, const std::string& top);

enum class StreamResult { ok, client_closed, error };

struct StreamOutcome {
  StreamResult result = StreamResult::ok;
  std::string error;       // for StreamResult::error
  uint64_t bytes_sent = 0; // archive bytes the writer accepted
};

// Streams the archive. `write` returns false when the client is gone;
// `throttle(n)` waits before n bytes go out. Progress goes to `job`.
StreamOutcome stream_archive(const TreeAccess& tree, int folder_fd, const ArchivePlan& plan,
                             const std::string& format, Job& job,
                             const std::function<bool(const char*, size_t)>& write,
                             const std::function<void(uint64_t)>& throttle);

}  // namespace sendense::web
