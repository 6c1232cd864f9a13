#include "readers/fs/paged_listing.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "readers/common/error.h"
#include "readers/common/shared_lru.h"
#include "readers/fs/listing_cap.h"
#include "readers/fs/names.h"

namespace sendense {

namespace {

// Folders whose shown listing is kept, within the backup's cache budget
// (without one, their weight in total is the cap on one). The listing last
// used stays pinned (SharedLru::Pin::last), even past the budget or heavier
// than it (a million short names weigh about 60 MiB), so paging through a
// folder lists it once even while each page's attributes churn the
// metadata caches.
constexpr size_t kListingsKept = 32;

size_t weight_of(const std::vector<DirEntry>& entries) {
  size_t w = sizeof(entries) + (entries.capacity() - entries.size()) * sizeof(DirEntry);
  for (const auto& e : entries) w += listing_weight(e.name);
  return w;
}

class PagedListings final : public Filesystem {
 public:
  PagedListings(FilesystemPtr reader, CacheBudgetPtr budget, size_t max_bytes)
      : reader_(std::move(reader)),
        max_bytes_(max_bytes),
        listings_(kListingsKept, max_bytes, std::move(budget), ext::SharedLru<std::vector<DirEntry>>::Pin::last) {}

  uint64_t root_ino() const override { return reader_->root_ino(); }
  std::string type_name() const override { return reader_->type_name(); }
  JournalReport journal() const override { return reader_->journal(); }
  Attr getattr(uint64_t ino) override { return reader_->getattr(ino); }

  std::optional<Attr> lookup(uint64_t dir, std::string_view name) override {
    auto attr = reader_->lookup(dir, name);
    if (!attr && may_be_escaped(name)) {  // a name shown escaped: find its raw entry
      for (const auto& e : *listing(dir))
        if (e.name == name) return reader_->getattr(e.ino);
    }
    return attr;
  }

  std::vector<DirEntry> readdir(uint64_t dir) override { return *listing(dir); }
  std::vector<DirEntry> readdir_page(uint64_t dir, uint64_t cookie, size_t max, bool) override {
    return page_of(*listing(dir), cookie, max);
  }

  std::string readlink(uint64_t ino) override { return reader_->readlink(ino); }
  uint64_t open(uint64_t ino) override { return reader_->open(ino); }
  size_t read(uint64_t handle, uint64_t offset, std::span<std::byte> buf) override {
    return reader_->read(handle, offset, buf);
  }
  void release(uint64_t handle) override { reader_->release(handle); }
  std::optional<std::vector<Extent>> map_read(uint64_t handle, uint64_t offset, size_t size) override {
    return reader_->map_read(handle, offset, size);
  }
  std::optional<std::vector<Extent>> map_file(uint64_t ino, size_t max_extents) override {
    return reader_->map_file(ino, max_extents);
  }
  std::vector<std::string> listxattr(uint64_t ino) override { return reader_->listxattr(ino); }
  std::optional<std::string> getxattr(uint64_t ino, std::string_view name) override {
    return reader_->getxattr(ino, name);
  }
  FsStat statfs() override { return reader_->statfs(); }

 private:
  // The folder's entries under the names they are shown with.
  std::shared_ptr<const std::vector<DirEntry>> listing(uint64_t dir) {
    if (auto kept = listings_.find(dir)) return kept;
    auto entries = std::make_shared<std::vector<DirEntry>>(reader_->readdir(dir));
    std::vector<std::string> raw;
    raw.reserve(entries->size());
    for (const auto& e : *entries) raw.push_back(e.name);
    auto shown = shown_names(raw);
    for (size_t i = 0; i < entries->size(); ++i) (*entries)[i].name = std::move(shown[i]);  // page_of sets `next`
    const size_t weight = weight_of(*entries);
    if (weight > max_bytes_)
      throw Error(EIO, "folder inode " + std::to_string(dir) + " lists " + std::to_string(entries->size()) +
                           " entries (" + std::to_string(weight >> 20) + " MiB), more than a listing may hold (" +
                           std::to_string(max_bytes_ >> 20) + " MiB)");
    return listings_.insert(dir, std::move(entries), weight);
  }

  FilesystemPtr reader_;
  const size_t max_bytes_;
  ext::SharedLru<std::vector<DirEntry>> listings_;
};

}  // namespace

std::vector<DirEntry> page_of(const std::vector<DirEntry>& all, uint64_t cookie, size_t max) {
  std::vector<DirEntry> page;
  if (cookie >= all.size()) return page;
  const size_t end = static_cast<size_t>(cookie) + std::min<size_t>(max, all.size() - cookie);
  page.reserve(end - cookie);
  for (size_t i = cookie; i < end; ++i) {
    page.push_back(all[i]);
    page.back().next = i + 1;
  }
  return page;
}

std::vector<DirEntry> Filesystem::readdir_page(uint64_t dir, uint64_t cookie, size_t max, bool) {
  return page_of(readdir(dir), cookie, max);
}

FilesystemPtr with_paged_listings(FilesystemPtr reader, CacheBudgetPtr budget, size_t max_listing_bytes) {
  return std::make_shared<PagedListings>(std::move(reader), std::move(budget), max_listing_bytes);
}

}  // namespace sendense
