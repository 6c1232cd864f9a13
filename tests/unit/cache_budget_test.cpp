// The per-backup cache budget (issue 11): caches sharing one CacheBudget
// give way to each other by least recent use, the value last used stays pinned,
// and a real backup (a zlib-compressed qcow2 of an ext4 volume made with
// mkfs.ext4 -d and qemu-img, GPT-partitioned) walked whole under a tiny
// budget reads every byte right while its caches stay within the budget.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "readers/common/cache_budget.h"
#include "readers/common/shared_lru.h"
#include "readers/engine/open_backup.h"
#include "readers/volume/volume.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using test::q;
using test::run_ok;
using test::TempDir;
using Lru = ext::SharedLru<std::string>;

std::shared_ptr<const std::string> value(size_t n) { return std::make_shared<const std::string>(n, 'x'); }

TEST(CacheBudgetTest, CachesSharingABudgetEvictTheLeastRecentlyUsedEntryOfAny) {
  auto budget = std::make_shared<CacheBudget>(1000);
  Lru a(100, 1 << 20, budget), b(100, 1 << 20, budget);
  a.insert(1, value(400), 400);
  b.insert(1, value(400), 400);
  ASSERT_NE(a.find(1), nullptr);  // a's entry is now the more recently used
  b.insert(2, value(400), 400);   // 1200 > 1000: the oldest of both caches goes, b's first
  EXPECT_NE(a.find(1), nullptr);
  EXPECT_EQ(b.find(1), nullptr);
  EXPECT_NE(b.find(2), nullptr);
  EXPECT_EQ(budget->used(), 800u);
  EXPECT_EQ(budget->evictions(), 1u);

  a.insert(2, value(700), 700);  // 1500: evicts by age across both until within 1000
  EXPECT_LE(budget->used(), 1000u);
  EXPECT_NE(a.find(2), nullptr);
  EXPECT_EQ(a.find(1), nullptr);
  EXPECT_EQ(b.find(2), nullptr);
}

TEST(CacheBudgetTest, AValueHeavierThanTheBudgetIsDroppedOrKeptPinnedOutsideIt) {
  auto budget = std::make_shared<CacheBudget>(100);
  Lru dropping(8, 1 << 20, budget);
  Lru pinning(8, 1 << 20, budget, Lru::Pin::last);
  EXPECT_EQ(dropping.insert(1, value(200), 200)->size(), 200u);  // handed back to its caller
  EXPECT_EQ(dropping.find(1), nullptr);

  pinning.insert(1, value(200), 200);
  EXPECT_NE(pinning.find(1), nullptr);
  EXPECT_EQ(budget->used(), 0u);  // the pin is not charged
  pinning.insert(3, value(50), 50);  // now the one pinned
  EXPECT_EQ(budget->used(), 50u);
  EXPECT_EQ(pinning.find(1), nullptr);
  pinning.insert(2, value(300), 300);
  EXPECT_NE(pinning.find(2), nullptr);
  EXPECT_NE(pinning.find(3), nullptr);
  pinning.erase(3);
  EXPECT_EQ(pinning.find(3), nullptr);
}

// The value last used survives the budget's evictions: a big folder's
// listing, found once per page, is not pushed out by the many small
// entries (metadata blocks) each page adds to the other caches.
TEST(CacheBudgetTest, ThePinnedValueSurvivesEvictionsByOtherCaches) {
  auto budget = std::make_shared<CacheBudget>(1000);
  Lru listings(8, 1 << 20, budget, Lru::Pin::last);
  Lru blocks(100, 1 << 20, budget);
  listings.insert(7, value(600), 600);
  for (uint64_t page = 0; page < 20; ++page) {
    ASSERT_NE(listings.find(7), nullptr) << "page " << page;
    for (uint64_t b = 0; b < 5; ++b) blocks.insert(page * 5 + b, value(100), 100);
    EXPECT_LE(budget->used(), 1000u);
  }
  EXPECT_NE(listings.find(7), nullptr);
  Lru unpinned(8, 1 << 20, budget);  // the same churn without a pin loses it
  unpinned.insert(7, value(600), 600);
  ASSERT_NE(unpinned.find(7), nullptr);
  for (uint64_t b = 0; b < 5; ++b) blocks.insert(1000 + b, value(100), 100);
  EXPECT_EQ(unpinned.find(7), nullptr);
}

TEST(CacheBudgetTest, ACacheGoneGivesItsBytesBack) {
  auto budget = std::make_shared<CacheBudget>(1000);
  Lru kept(8, 1 << 20, budget);
  {
    Lru gone(8, 1 << 20, budget);
    gone.insert(1, value(300), 300);
    kept.insert(1, value(200), 200);
    EXPECT_EQ(budget->used(), 500u);
  }
  EXPECT_EQ(budget->used(), 200u);
  kept.insert(2, value(700), 700);  // fits now that the other cache left
  EXPECT_EQ(budget->evictions(), 0u);
  EXPECT_NE(kept.find(1), nullptr);
}

// Every file of the source tree, by relative path.
std::map<std::string, std::string> files_of(const std::filesystem::path& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root))
    if (e.is_regular_file()) out[std::filesystem::relative(e.path(), root).string()] = test::read_file(e.path());
  return out;
}

struct Walk {
  Filesystem& fs;
  std::map<std::string, std::string> files;

  void dir(uint64_t ino, const std::string& prefix) {
    for (uint64_t cookie = 0;;) {
      auto page = fs.readdir_page(ino, cookie, 16, false);  // small pages: the listing is asked for again and again
      for (const DirEntry& e : page) {
        if (e.name == "." || e.name == ".." || e.name == "lost+found") continue;
        const auto attr = fs.lookup(ino, e.name);  // through the folder's name index
        ASSERT_TRUE(attr) << prefix << e.name;
        if (S_ISDIR(attr->mode)) {
          dir(attr->ino, prefix + e.name + "/");
        } else if (S_ISREG(attr->mode)) {
          std::string data(attr->size, '\0');
          const uint64_t h = fs.open(attr->ino);
          size_t done = 0;
          while (done < data.size()) {  // 4 KiB reads: many visits to the same compressed clusters
            const size_t n = std::min<size_t>(4096, data.size() - done);
            const size_t got = fs.read(h, done, std::span(reinterpret_cast<std::byte*>(data.data() + done), n));
            ASSERT_GT(got, 0u);
            done += got;
          }
          fs.release(h);
          files[prefix + e.name] = std::move(data);
        }
      }
      if (page.size() < 16) break;
      cookie = page.back().next;
    }
  }
};

TEST(CacheBudgetTest, ABackupWalkedWholeUnderATinyBudgetReadsRightAndStaysWithinIt) {
  TempDir dir;
  const std::string src = dir / "src";
  // 40 folders of 30 small files, one folder of 3,000 names (its index and
  // listing weigh more than the budget), a few larger files.
  run_ok("set -e; mkdir -p " + q(src + "/many") + "; cd " + q(src) +
         "; for d in $(seq 1 40); do mkdir d$d; for f in $(seq 1 30); do"
         " seq $d $((d * f * 7)) > d$d/file-$f.txt; done; done;"
         " for f in $(seq 1 3000); do echo $f > many/entry-with-a-longer-name-$f; done;"
         " head -c 3000000 /dev/urandom > big.bin; seq 1 400000 > big.txt");
  const std::string raw = dir / "disk.raw";
  const std::string part = dir / "part.raw";
  run_ok("mkfs.ext4 -q -F -d " + q(src) + " " + q(part) + " 64M");
  run_ok("truncate -s 66M " + q(raw) + " && printf 'label: gpt\\nstart=2048, size=131072\\n' | sfdisk -q " + q(raw) +
         " && dd if=" + q(part) + " of=" + q(raw) + " bs=1M seek=1 conv=notrunc status=none");
  const std::string image = dir / "backup.qcow2";
  run_ok("qemu-img convert -q -c -f raw -O qcow2 " + q(raw) + " " + q(image));

  auto budget = std::make_shared<CacheBudget>(256u << 10);  // 256 KiB for everything
  OpenedDisks disks = open_disks({{image, ImageFormat::qcow2}}, nullptr, budget);
  const BackupLayout layout = discover_backup(disks.devices);
  EngineOptions engine;
  engine.fs_open.cache_budget = budget;
  engine.label = "budget-test";
  OpenedVolumes opened = open_volumes(layout, engine);
  ASSERT_EQ(opened.volumes.size(), 1u);
  Filesystem& fs = *opened.volumes[0].fs;

  const auto expected = files_of(src);
  for (int pass = 0; pass < 2; ++pass) {  // the second one through what the first left cached
    Walk walk{fs, {}};
    walk.dir(fs.root_ino(), "");
    ASSERT_EQ(walk.files.size(), expected.size());
    for (const auto& [path, data] : expected) {
      ASSERT_TRUE(walk.files.count(path)) << path;
      ASSERT_TRUE(walk.files[path] == data) << path << " differs";
    }
    EXPECT_LE(budget->used(), budget->limit()) << "pass " << pass;
  }
  EXPECT_GT(budget->evictions(), 100u);  // the walk needed more than the budget: it churned

  // The same backup with the default budget walks without evicting anything.
  auto roomy = std::make_shared<CacheBudget>(kDefaultCacheBudgetBytes);
  OpenedDisks disks2 = open_disks({{image, ImageFormat::qcow2}}, nullptr, roomy);
  const BackupLayout layout2 = discover_backup(disks2.devices);
  engine.fs_open.cache_budget = roomy;
  OpenedVolumes opened2 = open_volumes(layout2, engine);
  Walk walk{*opened2.volumes.at(0).fs, {}};
  walk.dir(opened2.volumes[0].fs->root_ino(), "");
  EXPECT_EQ(walk.files.size(), expected.size());
  EXPECT_EQ(roomy->evictions(), 0u);
  EXPECT_GT(roomy->used(), budget->limit());
}

}  // namespace
}  // namespace sendense
