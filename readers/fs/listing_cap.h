// How much one folder's listing may weigh, whatever its image claims. The
// readers count it entry by entry while they build a listing, and the paged
// listings (paged_listing.h) hold what they keep to the same cap, so a
// folder an image makes up costs at most this before it answers EIO,
// rather than an allocation the image chose.
#pragma once

#include <cerrno>
#include <cstddef>
#include <string>
#include <string_view>

#include "readers/common/error.h"
#include "readers/fs/filesystem.h"

namespace sendense {

// What one entry of a listing costs in memory: the entry, and its name
// where it does not fit the string's own buffer.
inline size_t listing_weight(std::string_view name) {
  return sizeof(DirEntry) + (name.size() > 15 ? name.size() + 1 : 0);
}

class ListingCap {
 public:
  explicit ListingCap(size_t max_bytes) : max_(max_bytes) {}

  // Counts one more entry; past the cap throws Error(EIO) naming the folder,
  // the entries counted and the cap.
  void add(std::string_view name, const std::string& where = {}) {
    bytes_ += listing_weight(name);
    ++entries_;
    if (bytes_ > max_) {
      const std::string cap = max_ % (1u << 20) == 0 ? std::to_string(max_ >> 20) + " MiB"
                                                      : std::to_string(max_ >> 10) + " KiB";
      throw Error(EIO,
                  "folder lists more than " + std::to_string(entries_ - 1) + " entries: over " + cap +
                      " of listing, the cap on one folder",
                  where);
    }
  }

 private:
  const size_t max_;
  size_t bytes_ = 0;
  size_t entries_ = 0;
};

}  // namespace sendense
