// The listings the tree shows, a page at a time. Every reader the engine
// opens is wrapped in one of these: its listings carry the names the tree
// shows (names.h: a name the kernel cannot take as an entry is escaped,
// uniquely within its folder, which needs the whole folder), its lookups
// find an escaped name's entry again, and readdir_page() hands out a
// folder in pages with index cookies. Whole listings are kept in a
// bounded LRU (charged to the backup's cache budget, when given), so paging
// through a folder lists it once: in the worker
// that memory is the worker's own (its address-space limit), and what
// crosses to the daemon, and what the daemon holds per open folder, is one
// page, whatever size of folder an image claims.
#pragma once

#include "readers/fs/filesystem.h"

namespace sendense {

// `max_listing_bytes` (kMaxListingBytes, filesystem.h): listing a heavier
// folder gives EIO, as the readers do while they build one.
FilesystemPtr with_paged_listings(FilesystemPtr reader, CacheBudgetPtr budget = nullptr,
                                  size_t max_listing_bytes = kMaxListingBytes);

// readdir_page() over a whole listing: cookie = index of the entry to start at.
std::vector<DirEntry> page_of(const std::vector<DirEntry>& all, uint64_t cookie, size_t max);

}  // namespace sendense
