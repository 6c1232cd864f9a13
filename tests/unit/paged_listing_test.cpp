// Folders handed out a page at a time (readers/fs/paged_listing.h), over a
// real reader (the pass-through one on a host folder): the pages join into
// the whole listing, a listing resumes at any cookie it gave, and past the
// end there is nothing.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>
#include <string>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/fs/ext/ext_filesystem.h"
#include "readers/fs/paged_listing.h"
#include "readers/fs/passthrough/passthrough_filesystem.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

class PagedListingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = dir / "root";
    ASSERT_EQ(::mkdir(root.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((root + "/big").c_str(), 0755), 0);
    for (int i = 0; i < 2500; ++i) test::write_file(root + "/big/f" + std::to_string(i), "");
    fs = with_paged_listings(open_passthrough_filesystem(root, "test", "backup/part1"));
    big = fs->lookup(fs->root_ino(), "big")->ino;
  }

  std::vector<DirEntry> all_pages(uint64_t from, size_t max) {
    std::vector<DirEntry> out;
    for (uint64_t cookie = from;;) {
      auto page = fs->readdir_page(big, cookie, max, false);
      EXPECT_LE(page.size(), max);
      if (page.empty()) return out;
      for (const auto& e : page) {
        EXPECT_GT(e.next, cookie) << "cookies grow along the listing";
        cookie = e.next;
        out.push_back(e);
      }
    }
  }

  test::TempDir dir;
  std::string root;
  FilesystemPtr fs;
  uint64_t big = 0;
};

TEST_F(PagedListingTest, PagesJoinIntoTheWholeListing) {
  const auto whole = fs->readdir(big);
  ASSERT_EQ(whole.size(), 2502u);  // with "." and ".."
  for (size_t max : {size_t{1}, size_t{7}, size_t{1024}, size_t{5000}}) {
    const auto paged = all_pages(0, max);
    ASSERT_EQ(paged.size(), whole.size()) << "page size " << max;
    for (size_t i = 0; i < whole.size(); ++i) {
      EXPECT_EQ(paged[i].name, whole[i].name);
      EXPECT_EQ(paged[i].ino, whole[i].ino);
    }
  }
  std::set<std::string> names;
  for (const auto& e : whole) names.insert(e.name);
  EXPECT_EQ(names.size(), whole.size());
  EXPECT_EQ(names.count("f2499"), 1u);
}

TEST_F(PagedListingTest, ResumesAtEveryCookieItGave) {
  const auto whole = all_pages(0, 100);
  ASSERT_EQ(whole.size(), 2502u);
  // A handle taken over after a restart, or a client seeking back, starts
  // at a cookie in the middle: the rest of the listing follows it exactly.
  for (size_t i : {size_t{0}, size_t{1}, size_t{99}, size_t{100}, size_t{1733}, whole.size() - 1}) {
    const auto rest = all_pages(whole[i].next, 64);
    ASSERT_EQ(rest.size(), whole.size() - i - 1) << "after entry " << i;
    if (!rest.empty()) {
      EXPECT_EQ(rest.front().name, whole[i + 1].name);
    }
  }
  EXPECT_TRUE(fs->readdir_page(big, whole.back().next, 10, false).empty());
  EXPECT_TRUE(fs->readdir_page(big, whole.back().next + 1000, 10, false).empty());
}

// A folder whose listing would weigh more than the cap gives EIO when
// listed (each page would list it again); its entries stay reachable by name.
TEST_F(PagedListingTest, AFolderHeavierThanTheCapGivesEioAndKeepsItsNames) {
  auto capped = with_paged_listings(open_passthrough_filesystem(root, "test", "backup/part1"), nullptr, 64 * 1024);
  const uint64_t wide = capped->lookup(capped->root_ino(), "big")->ino;
  try {
    capped->readdir_page(wide, 0, 10, false);
    ADD_FAILURE() << "a 2,500-entry folder listed under a 64 KiB cap";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO);
    EXPECT_NE(std::string(e.what()).find("2502 entries"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(capped->lookup(wide, "f1234").has_value());
  EXPECT_EQ(capped->readdir_page(capped->root_ino(), 0, 10, false).size(), 3u) << "small folders still list";
}

// The readers hold themselves to the same cap while they build a listing:
// an ext4 image (mkfs.ext4 -d of the same folder) opened with a 64 KiB cap
// stops at the big folder with EIO naming it and the cap, before the paged
// listing or anyone else holds the whole folder; small folders still list.
TEST_F(PagedListingTest, TheExtReaderStopsBuildingAFolderAtTheCap) {
  const std::string image = dir / "ext.raw";
  test::run_ok("mkfs.ext4 -q -F -d " + test::q(root) + " " + test::q(image) + " 32M");
  FsOpenOptions options;
  options.max_listing_bytes = 64 * 1024;
  auto reader = open_ext_filesystem(open_raw_image(image), "backup/part1", options);
  auto ext = with_paged_listings(reader, nullptr, options.max_listing_bytes);
  const uint64_t wide = ext->lookup(ext->root_ino(), "big")->ino;
  for (Filesystem* f : {reader.get(), ext.get()}) {  // the reader itself, and through the paged listing
    for (auto list : {+[](Filesystem& r, uint64_t d) { r.readdir(d); },
                      +[](Filesystem& r, uint64_t d) { r.readdir_page(d, 0, 10, false); }}) {
      try {
        list(*f, wide);
        ADD_FAILURE() << "a 2,500-entry folder listed under a 64 KiB cap";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), EIO);
        EXPECT_NE(std::string(e.what()).find("64 KiB of listing"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("backup/part1 inode " + std::to_string(wide)), std::string::npos)
            << e.what();
      }
    }
  }
  EXPECT_GE(ext->readdir_page(ext->root_ino(), 0, 10, false).size(), 3u) << "small folders still list";
  // The same image under the default cap lists all of it.
  auto whole = open_ext_filesystem(open_raw_image(image), "backup/part1");
  EXPECT_EQ(whole->readdir(wide).size(), 2502u);
}

}  // namespace
}  // namespace sendense
