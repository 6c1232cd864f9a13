// LVM2 without device-mapper: the label/metadata parser over metadata the
// real LVM tools wrote (tests/fixtures/make-lvm-fixtures.sh), hostile
// variants of it, and the LV mapping: the bytes read through each LV must be
// the bytes of the filesystem file the fixture script wrote where `lvs
// --segments` placed the LV; multi-disk volume naming.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/volume/lvm.h"
#include "readers/volume/volume.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using test::read_file;

std::string fixtures() { return SENDENSE_LVM_FIXTURES_DIR; }
std::string raw(const std::string& name) { return fixtures() + "/raw/" + name + ".raw"; }
std::string fs_file(const std::string& tree) { return fixtures() + "/fs/" + tree + ".ext4"; }

// A disk image held in memory: the fixture's bytes, changed by a test to
// make them hostile. Test data, not a stand-in for our code.
class MemoryDisk final : public BlockDevice {
 public:
  explicit MemoryDisk(std::string bytes, std::string name = "memory")
      : bytes_(std::move(bytes)), name_(std::move(name)) {}
  uint64_t size() const override { return bytes_.size(); }
  std::string describe() const override { return name_; }
  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    require_in_range(*this, offset, buf.size());
    std::memcpy(buf.data(), bytes_.data() + offset, buf.size());
  }

 private:
  std::string bytes_;
  std::string name_;
};

std::string read_range(const BlockDevice& dev, uint64_t offset, size_t length) {
  std::string out(length, '\0');
  dev.read_at(offset, std::as_writable_bytes(std::span(out.data(), out.size())));
  return out;
}

std::string file_range(const std::string& path, uint64_t offset, size_t length) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(length, '\0');
  in.read(out.data(), static_cast<std::streamsize>(length));
  EXPECT_EQ(static_cast<size_t>(in.gcount()), length) << path;
  return out;
}

const Volume* find_volume(const BackupLayout& l, const std::string& name) {
  for (const auto& v : l.volumes)
    if (v.name == name) return &v;
  return nullptr;
}

BackupLayout layout_of(const std::vector<std::string>& disks) {
  std::vector<BlockDevicePtr> devs;
  for (const auto& d : disks) devs.push_back(open_raw_image(raw(d)));
  return discover_backup(devs);
}

// Every byte of the LV, 1 MiB at a time, equals the filesystem file.
void expect_lv_equals_file(const Volume& v, const std::string& file) {
  ASSERT_TRUE(v.device) << v.name << ": " << v.note;
  const uint64_t size = std::stoull(test::run_ok("stat -c %s " + test::shell_quote(file)));
  ASSERT_LE(size, v.device->size());
  constexpr size_t kChunk = 1 << 20;
  for (uint64_t off = 0; off < size; off += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - off));
    ASSERT_EQ(read_range(*v.device, off, n), file_range(file, off, n)) << v.name << " differs at " << off;
  }
}

// The single-disk, two-disk and twin fixtures with their LVs.
TEST(LvmMapping, LinearLvEqualsTheFilesystemWritten) {
  const BackupLayout l = layout_of({"lvm-ubuntu"});
  const Volume* lv = find_volume(l, "lvm-ubuntu--vg-ubuntu--lv");
  ASSERT_NE(lv, nullptr);
  EXPECT_EQ(lv->type, FsType::ext4);
  expect_lv_equals_file(*lv, fs_file("ubuntu-root"));
  // Single-disk naming as before: part1, part2; the PV is a volume without a reader.
  ASSERT_NE(find_volume(l, "part1"), nullptr);
  const Volume* pv = find_volume(l, "part2");
  ASSERT_NE(pv, nullptr);
  EXPECT_EQ(pv->type, FsType::lvm_pv);
  EXPECT_EQ(pv->note, "lvm-pv of VG ubuntu-vg");
  EXPECT_TRUE(l.warnings.empty()) << l.warnings.front();
}

TEST(LvmMapping, ThinLvsAreListedAsNotSupported) {
  const BackupLayout l = layout_of({"lvm-ubuntu"});
  for (const char* name : {"lvm-ubuntu--vg-thin1", "lvm-ubuntu--vg-pool"}) {
    const Volume* v = find_volume(l, name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_FALSE(v->device);
    EXPECT_NE(v->note.find("not supported yet"), std::string::npos) << v->note;
  }
  EXPECT_NE(find_volume(l, "lvm-ubuntu--vg-thin1")->note.find("thin LV"), std::string::npos);
  // The pool's hidden data and metadata LVs are parts of the pool, not volumes.
  EXPECT_EQ(find_volume(l, "lvm-ubuntu--vg-pool_tdata"), nullptr);
  EXPECT_EQ(find_volume(l, "lvm-ubuntu--vg-pool_tmeta"), nullptr);
}

TEST(LvmMapping, VgAcrossTwoDisksStripedAndSpanning) {
  const BackupLayout l = layout_of({"lvm-multi-disk0", "lvm-multi-disk1"});
  std::vector<std::string> names;
  for (const auto& v : l.volumes) names.push_back(v.name);
  EXPECT_EQ(names, (std::vector<std::string>{"disk0-part1", "disk0-part2", "disk1-disk", "lvm-data-stripe",
                                             "lvm-data-span"}));
  expect_lv_equals_file(*find_volume(l, "lvm-data-stripe"), fs_file("stripe"));
  expect_lv_equals_file(*find_volume(l, "lvm-data-span"), fs_file("span"));
  EXPECT_EQ(find_volume(l, "disk0-part2")->note, "lvm-pv of VG data");
  EXPECT_EQ(find_volume(l, "disk1-disk")->note, "lvm-pv of VG data");
}

TEST(LvmMapping, ReadsAcrossStripeAndSegmentBoundaries) {
  const BackupLayout l = layout_of({"lvm-multi-disk0", "lvm-multi-disk1"});
  const Volume* stripe = find_volume(l, "lvm-data-stripe");
  const Volume* span = find_volume(l, "lvm-data-span");
  ASSERT_TRUE(stripe && stripe->device && span && span->device);
  // The stripe size and segment boundary as the tools reported them.
  const std::string stripe_env = read_file(fixtures() + "/lv-data-stripe.env");
  ASSERT_NE(stripe_env.find("stripe_size=65536"), std::string::npos) << stripe_env;
  const uint64_t chunk = 65536;
  const std::string span_env = read_file(fixtures() + "/lv-data-span.env");
  const auto second = span_env.find("\nsegment start=");
  ASSERT_NE(second, std::string::npos) << span_env;
  const uint64_t boundary = std::stoull(span_env.substr(second + 15));
  ASSERT_GT(boundary, 0u);

  struct Case {
    const Volume* v;
    std::string file;
    uint64_t offset;
    size_t length;
  };
  std::vector<Case> cases{
      {stripe, fs_file("stripe"), chunk - 100, 200},                 // stripe 0 -> stripe 1
      {stripe, fs_file("stripe"), 2 * chunk - 1, 2},                 // stripe 1 -> stripe 0, next row
      {stripe, fs_file("stripe"), 3 * chunk + 17, 5 * chunk + 3},    // several chunks in one read
      {stripe, fs_file("stripe"), stripe->device->size() - chunk - 5, chunk + 5},  // to the very end
      {span, fs_file("span"), boundary - 4096, 8192},                // disk0 -> disk1
      {span, fs_file("span"), boundary - 1, 1},
      {span, fs_file("span"), boundary, 1},
  };
  std::mt19937_64 rng(42);
  for (int i = 0; i < 50; ++i) {
    const size_t len = 1 + rng() % (3 * chunk);
    cases.push_back({stripe, fs_file("stripe"), rng() % (stripe->device->size() - len), len});
  }
  for (const Case& c : cases)
    EXPECT_EQ(read_range(*c.v->device, c.offset, c.length), file_range(c.file, c.offset, c.length))
        << c.v->name << " at " << c.offset << " +" << c.length;
  // Past the end: EIO, never a short or wrapped read.
  try {
    read_range(*stripe->device, stripe->device->size() - 10, 11);
    ADD_FAILURE() << "read past the end succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO);
  }
}

TEST(LvmMapping, ConcurrentReadsThroughStripesAndSegments) {
  const BackupLayout l = layout_of({"lvm-multi-disk0", "lvm-multi-disk1"});
  const std::string stripe = read_file(fs_file("stripe"));
  const std::string span = read_file(fs_file("span"));
  const BlockDevicePtr devs[2] = {find_volume(l, "lvm-data-stripe")->device, find_volume(l, "lvm-data-span")->device};
  ASSERT_TRUE(devs[0] && devs[1]);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 7);
      for (int i = 0; i < 200; ++i) {
        const int which = static_cast<int>(rng() % 2);
        const std::string& want = which == 0 ? stripe : span;
        const size_t len = 1 + rng() % (256 << 10);
        const uint64_t off = rng() % (want.size() - len);
        if (read_range(*devs[which], off, len) != want.substr(off, len)) ++mismatches;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(LvmMapping, MissingDiskMakesItsLvsUnreadableNotWrong) {
  // Disk 1 alone: the VG's PV on disk 0 is missing.
  const BackupLayout l = layout_of({"lvm-multi-disk1"});
  for (const char* name : {"lvm-data-stripe", "lvm-data-span"}) {
    const Volume* v = find_volume(l, name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_FALSE(v->device);
    EXPECT_NE(v->note.find("missing"), std::string::npos) << v->note;
  }
}

TEST(LvmMapping, SameVgNameOnTwoSeparateBackups) {
  const BackupLayout a = layout_of({"lvm-twin-a"});
  const BackupLayout b = layout_of({"lvm-twin-b"});
  expect_lv_equals_file(*find_volume(a, "lvm-vg0-lv0"), fs_file("twin-a"));
  expect_lv_equals_file(*find_volume(b, "lvm-vg0-lv0"), fs_file("twin-b"));
}

// ---- the metadata the tools wrote, and hostile variants of it ----------------

std::string twin_metadata() {
  auto label = read_lvm_label(*open_raw_image(raw("lvm-twin-a")));
  EXPECT_TRUE(label.has_value());
  if (!label || label->metadata.empty()) return {};
  return label->metadata.front();
}

TEST(LvmMetadata, ParsesWhatTheToolsWrote) {
  const std::string text = twin_metadata();
  ASSERT_FALSE(text.empty());
  const LvmVgMetadata vg = parse_lvm_metadata(text, "twin-a");
  EXPECT_EQ(vg.name, "vg0");
  EXPECT_GT(vg.seqno, 0u);
  // What `vgs`/`lvs` reported when the fixture was made.
  const std::string env = read_file(fixtures() + "/lv-vg0-lv0-a.env");
  ASSERT_NE(env.find("stripes=1"), std::string::npos) << env;
  const auto colon = env.find(':', env.find("areas="));
  const uint64_t first = std::stoull(env.substr(colon + 1));
  const uint64_t last = std::stoull(env.substr(env.find('-', colon) + 1));
  const uint64_t bytes = std::stoull(env.substr(env.find("bytes=") + 6));
  ASSERT_EQ(vg.pvs.size(), 1u);
  ASSERT_EQ(vg.lvs.size(), 1u);
  const LvmLvMetadata& lv = vg.lvs[0];
  EXPECT_EQ(lv.name, "lv0");
  EXPECT_TRUE(lv.visible);
  EXPECT_EQ(lv.type(), "linear");
  ASSERT_EQ(lv.segments.size(), 1u);
  EXPECT_EQ(lv.segments[0].stripes[0].first_pe, first);
  EXPECT_EQ(lv.segments[0].extent_count, last - first + 1);
  EXPECT_EQ(lv.segments[0].extent_count * vg.extent_size * 512, bytes);
  // The label's uuid is the PV's id without dashes.
  EXPECT_EQ(read_lvm_label(*open_raw_image(raw("lvm-twin-a")))->uuid, vg.pvs[0].uuid);
}

TEST(LvmMetadata, DashesInNamesDoubledAsDeviceMapperDoes) {
  EXPECT_EQ(lvm_volume_name("my-vg", "lv"), "lvm-my--vg-lv");
  EXPECT_EQ(lvm_volume_name("ubuntu-vg", "ubuntu-lv"), "lvm-ubuntu--vg-ubuntu--lv");
  EXPECT_NE(lvm_volume_name("a-b", "c"), lvm_volume_name("a", "b-c"));
}

std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << "fixture metadata has no '" << from << "'";
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

void expect_refused(const std::string& text, const std::string& words) {
  try {
    parse_lvm_metadata(text, "hostile");
    ADD_FAILURE() << "accepted metadata that should fail with '" << words << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO);
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hostile"), std::string::npos) << e.what();
  }
}

TEST(LvmMetadata, HostileTextIsRefusedWithAClearError) {
  const std::string text = twin_metadata();
  ASSERT_FALSE(text.empty());
  const LvmVgMetadata vg = parse_lvm_metadata(text, "twin-a");
  const std::string pe_count = "pe_count = " + std::to_string(vg.pvs[0].pe_count);
  // Extents beyond the PV, through the stripe's first extent or the count.
  expect_refused(replace_once(text, "\"pv0\", 0", "\"pv0\", " + std::to_string(vg.pvs[0].pe_count)), "beyond");
  expect_refused(replace_once(text, "extent_count = 4", "extent_count = 4000"), "beyond");
  // Huge counts and values.
  expect_refused(replace_once(text, "segment_count = 1", "segment_count = 4294967296"), "out of range");
  expect_refused(replace_once(text, "stripe_count = 1", "stripe_count = 1000000"), "out of range");
  expect_refused(replace_once(text, pe_count, "pe_count = 99999999999999999999999"), "out of range");
  expect_refused(replace_once(text, "extent_size = " + std::to_string(vg.extent_size), "extent_size = 0"),
                 "extent_size is 0");
  // Unknown PV, a gap between segments, a stripe pair of the wrong shape.
  expect_refused(replace_once(text, "\"pv0\", 0", "\"pv7\", 0"), "unknown PV");
  expect_refused(replace_once(text, "start_extent = 0", "start_extent = 1"), "contiguous");
  expect_refused(replace_once(text, "\"pv0\", 0", "0, \"pv0\""), "pair");
  // Syntax: unterminated string, unterminated section, garbage.
  expect_refused(replace_once(text, "\"pv0\", 0", "\"pv0, 0"), "");
  expect_refused(text.substr(0, text.rfind('}')), "unterminated section");
  expect_refused(replace_once(text, "seqno = ", "seqno = @"), "value expected");
  expect_refused("vg { id = \"unterminated", "unterminated string");
  // Deep nesting and too many values.
  std::string deep = "vg { ";
  for (int i = 0; i < 200; ++i) deep += "a { ";
  expect_refused(deep, "nested deeper");
  std::string wide = "x = [";
  for (int i = 0; i < (1 << 20) + 10; ++i) wide += "1,";
  expect_refused(wide + "1]", "values");
  std::string deep_array = "x = ";
  for (int i = 0; i < 100; ++i) deep_array += "[";
  expect_refused(deep_array, "nested deeper");
  // Names outside LVM's character set would become folder names.
  expect_refused(replace_once(text, "vg0 {", "\"vg/../x\" {"), "invalid VG name");
}

TEST(LvmMetadata, TwoLvsOnOneExtentAreRefused) {
  const std::string text = twin_metadata();
  ASSERT_FALSE(text.empty());
  // A second LV using the first one's extents.
  const auto lvs = text.find("logical_volumes {");
  ASSERT_NE(lvs, std::string::npos);
  const std::string dup =
      "\nevil { id = \"x\" status = [\"READ\", \"VISIBLE\"] segment_count = 1 segment1 { start_extent = 0 "
      "extent_count = 1 type = \"striped\" stripe_count = 1 stripes = [ \"pv0\", 2 ] } }\n";
  std::string bad = text;
  bad.insert(lvs + std::strlen("logical_volumes {"), dup);
  expect_refused(bad, "two LVs use extent");
}

TEST(LvmMetadata, SnapshotStoresAndDuplicateNames) {
  const std::string text = twin_metadata();
  ASSERT_FALSE(text.empty());
  // A classic snapshot as lvcreate -s writes it: a visible store "snap" (a
  // striped LV) and a hidden "snapshot0" naming it. The store is listed as a
  // snapshot, never read as a filesystem.
  const auto lvs = text.find("logical_volumes {");
  ASSERT_NE(lvs, std::string::npos);
  const std::string snap =
      "\nsnap { id = \"s\" status = [\"READ\", \"VISIBLE\"] segment_count = 1 segment1 { start_extent = 0 "
      "extent_count = 1 type = \"striped\" stripe_count = 1 stripes = [ \"pv0\", 4 ] } }\n"
      "snapshot0 { id = \"t\" status = [\"READ\"] segment_count = 1 segment1 { start_extent = 0 "
      "extent_count = 4 type = \"snapshot\" chunk_size = 8 origin = \"lv0\" cow_store = \"snap\" } }\n";
  std::string with_snap = text;
  with_snap.insert(lvs + std::strlen("logical_volumes {"), snap);
  const LvmVgMetadata vg = parse_lvm_metadata(with_snap, "snap");
  ASSERT_EQ(vg.lvs.size(), 3u);
  for (const auto& lv : vg.lvs) {
    if (lv.name == "snap") {
      EXPECT_EQ(lv.type(), "snapshot");
    } else if (lv.name == "lv0") {
      EXPECT_EQ(lv.type(), "linear");  // the origin stays readable: it holds the current data
    } else {
      EXPECT_FALSE(lv.visible);
    }
  }
  // The same LV name twice (on free extents) would give two volumes one name.
  std::string twice = text;
  twice.insert(lvs + std::strlen("logical_volumes {"),
               "\nlv0 { id = \"d\" status = [\"READ\", \"VISIBLE\"] segment_count = 1 segment1 { start_extent = 0 "
               "extent_count = 1 type = \"striped\" stripe_count = 1 stripes = [ \"pv0\", 6 ] } }\n");
  expect_refused(twice, "LV listed twice");
}

// ---- damaged on-disk structures ------------------------------------------------

std::string twin_bytes() { return read_file(raw("lvm-twin-a")); }

TEST(LvmLabel, BadLabelChecksumIsAnError) {
  std::string disk = twin_bytes();
  const auto at = disk.find("LABELONE");
  ASSERT_NE(at, std::string::npos);
  disk[at + 100] ^= 1;  // inside the PV header, covered by the label CRC
  MemoryDisk dev(disk, "twin-a-damaged");
  try {
    read_lvm_label(dev);
    ADD_FAILURE() << "label with a bad checksum accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO);
    EXPECT_NE(std::string(e.what()).find("bad checksum"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("twin-a-damaged"), std::string::npos) << e.what();
  }
}

TEST(LvmLabel, BadMetadataChecksumGivesNoLvsAndAWarning) {
  std::string disk = twin_bytes();
  const std::string text = twin_metadata();
  ASSERT_FALSE(text.empty());
  // Every copy of the committed text (the circular buffer holds older ones too).
  for (auto at = disk.find(text); at != std::string::npos; at = disk.find(text, at + 1)) disk[at + 10] ^= 0x20;
  auto dev = std::make_shared<MemoryDisk>(disk, "twin-a-damaged");
  auto label = read_lvm_label(*dev);
  ASSERT_TRUE(label.has_value());
  EXPECT_TRUE(label->metadata.empty());
  ASSERT_FALSE(label->problems.empty());
  EXPECT_NE(label->problems[0].find("bad checksum"), std::string::npos) << label->problems[0];

  const BackupLayout l = discover_backup({dev});
  EXPECT_EQ(find_volume(l, "lvm-vg0-lv0"), nullptr);
  ASSERT_FALSE(l.warnings.empty());
  EXPECT_NE(l.warnings[0].find("bad checksum"), std::string::npos) << l.warnings[0];
  EXPECT_EQ(find_volume(l, "disk")->note, "lvm-pv (VG not readable)");
}

TEST(LvmLabel, DamagedFixtureKeepsItsOtherVolumes) {
  const BackupLayout l = layout_of({"lvm-damaged"});
  ASSERT_NE(find_volume(l, "part1"), nullptr);
  EXPECT_EQ(find_volume(l, "part1")->type, FsType::ext4);
  EXPECT_EQ(find_volume(l, "lvm-dmg-lv"), nullptr);
  ASSERT_FALSE(l.warnings.empty());
  EXPECT_NE(l.warnings[0].find("bad checksum"), std::string::npos) << l.warnings[0];
}

TEST(LvmLabel, PvSmallerThanItsExtentsIsRefused) {
  // The disk cut short: the metadata says the extents go further.
  std::string disk = twin_bytes();
  disk.resize(disk.size() / 4);
  auto dev = std::make_shared<MemoryDisk>(disk, "twin-a-short");
  const BackupLayout l = discover_backup({dev});
  EXPECT_EQ(find_volume(l, "lvm-vg0-lv0"), nullptr);
  ASSERT_FALSE(l.warnings.empty());
  EXPECT_NE(l.warnings[0].find("beyond"), std::string::npos) << l.warnings[0];
}

// Points the metadata area at `mda_start` of `disk` to an older copy of the
// text still in its circular buffer (as a PV left out of the last metadata
// update has), checksums recomputed. Returns that copy's seqno, 0 if none.
uint64_t make_stale(std::string& disk, uint64_t pv_offset, uint64_t mda_start, const std::string& vg) {
  auto le = [&](uint64_t at, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(disk[at + i]);
    return v;
  };
  auto put = [&](uint64_t at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) disk[at + i] = static_cast<char>(v >> (8 * i));
  };
  const uint64_t h = pv_offset + mda_start;
  const uint64_t size = le(h + 32, 8), committed = le(h + 40, 8);
  const std::string area = disk.substr(h, size);
  const LvmVgMetadata now = parse_lvm_metadata(area.substr(committed, area.find('\0', committed) - committed), "now");
  for (size_t at = area.find(vg + " {", 512); at != std::string::npos; at = area.find(vg + " {", at + 1)) {
    if (at == committed) continue;
    const size_t end = area.find('\0', at);
    if (end == std::string::npos) break;
    LvmVgMetadata old;
    try {
      old = parse_lvm_metadata(area.substr(at, end - at), "old");
    } catch (const Error&) {
      continue;  // a fragment overwritten by a later copy
    }
    if (old.seqno >= now.seqno) continue;
    put(h + 40, at, 8);
    put(h + 48, end + 1 - at, 8);
    put(h + 56, lvm_crc(kLvmCrcSeed, std::as_bytes(std::span(disk.data() + h + at, end + 1 - at))), 4);
    put(h, lvm_crc(kLvmCrcSeed, std::as_bytes(std::span(disk.data() + h + 4, 508))), 4);
    return old.seqno;
  }
  return 0;
}

TEST(LvmLabel, NewestMetadataCopyWinsOverAStalePv) {
  // The two PVs of VG "data": disk0's partition 2 and the whole of disk1.
  const BackupLayout fresh = layout_of({"lvm-multi-disk0", "lvm-multi-disk1"});
  const uint64_t pv0 = find_volume(fresh, "disk0-part2")->offset;
  for (int stale_disk : {0, 1}) {
    std::string disks[2] = {read_file(raw("lvm-multi-disk0")), read_file(raw("lvm-multi-disk1"))};
    // The metadata area starts at 4096 on a PV made by pvcreate's defaults (checked by the CRCs).
    const uint64_t old_seqno = make_stale(disks[stale_disk], stale_disk == 0 ? pv0 : 0, 4096, "data");
    ASSERT_GT(old_seqno, 0u) << "no older metadata copy in the buffer of disk " << stale_disk;
    auto stale = read_lvm_label(*make_slice(std::make_shared<MemoryDisk>(disks[stale_disk]), stale_disk == 0 ? pv0 : 0,
                                            stale_disk == 0 ? find_volume(fresh, "disk0-part2")->length
                                                            : disks[1].size(), "pv"));
    ASSERT_TRUE(stale && stale->metadata.size() == 1) << (stale && !stale->problems.empty() ? stale->problems[0] : "");
    EXPECT_EQ(parse_lvm_metadata(stale->metadata[0], "stale").seqno, old_seqno);
    const BackupLayout l = discover_backup({std::make_shared<MemoryDisk>(disks[0], "d0"),
                                            std::make_shared<MemoryDisk>(disks[1], "d1")});
    ASSERT_NE(find_volume(l, "lvm-data-span"), nullptr) << "stale disk " << stale_disk;
    expect_lv_equals_file(*find_volume(l, "lvm-data-span"), fs_file("span"));
  }
}

TEST(LvmLabel, CrcIsLvmsVariant) {
  // The checksum pvcreate stored in the label sector, recomputed.
  const std::string disk = twin_bytes();
  const auto at = disk.find("LABELONE");
  ASSERT_NE(at, std::string::npos);
  const std::string sector = disk.substr(at, 512);
  uint32_t stored = 0;
  for (int i = 3; i >= 0; --i) stored = (stored << 8) | static_cast<uint8_t>(sector[16 + i]);
  EXPECT_EQ(lvm_crc(kLvmCrcSeed, std::as_bytes(std::span(sector.data() + 20, 492))), stored);
  EXPECT_EQ(lvm_crc(kLvmCrcSeed, {}), kLvmCrcSeed);
}

TEST(LvmLabel, RandomDamageIsDetectedNeverACrash) {
  // Random bytes changed in the label and metadata area of a real PV, and
  // random characters changed in its metadata text handed straight to the
  // parser (no checksum to stop them): every outcome is an LV that reads
  // like the original, no LV, or an Error; never a crash (ASan/UBSan builds).
  const std::string original = twin_bytes();
  const std::string text = twin_metadata();
  ASSERT_FALSE(text.empty());
  const std::string lv_bytes = read_file(fs_file("twin-a"));
  std::mt19937_64 rng(1234);
  int refused = 0;
  for (int i = 0; i < 300; ++i) {
    std::string disk = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) disk[rng() % 8192] = static_cast<char>(rng());
    try {
      const BackupLayout l = discover_backup({std::make_shared<MemoryDisk>(disk, "fuzz")});
      const Volume* v = find_volume(l, "lvm-vg0-lv0");
      if (!v || !v->device) {
        ++refused;
        continue;
      }
      EXPECT_EQ(read_range(*v->device, 0, 65536), lv_bytes.substr(0, 65536)) << "iteration " << i;
    } catch (const Error& e) {
      ++refused;
      EXPECT_EQ(e.code(), EIO) << e.what();
    }
  }
  EXPECT_GT(refused, 0);
  for (int i = 0; i < 2000; ++i) {
    std::string t = text;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) t[rng() % t.size()] = "{}[]\"=,#\\0a-9\n "[rng() % 16];
    try {
      parse_lvm_metadata(t, "fuzz");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), EIO) << e.what();
    }
  }
}

// A PV made by hand: a label in sector 1 listing `areas` metadata areas
// that overlap (area k starts 512 * k bytes after area 0), all pointing at
// one committed text of `text_len` bytes placed after the last header.
std::string pv_with_overlapping_areas(size_t areas, size_t text_len) {
  auto put = [](std::string& d, uint64_t at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) d[at + static_cast<uint64_t>(i)] = static_cast<char>(v >> (8 * i));
  };
  auto crc = [](const std::string& d, uint64_t at, uint64_t len) {
    return lvm_crc(kLvmCrcSeed, std::as_bytes(std::span(d.data() + at, len)));
  };
  const uint64_t first = 4096;
  const uint64_t text_at = first + 512 * areas;
  std::string d(text_at + text_len, '\0');
  d.replace(text_at, text_len, std::string(text_len, '}'));  // refused by the parser at once
  const uint32_t text_crc = crc(d, text_at, text_len);
  for (size_t k = 0; k < areas; ++k) {
    const uint64_t start = first + 512 * k;
    const uint64_t size = text_at + text_len - start;
    d.replace(start + 4, 16, " LVM2 x[5A%r0N*>");
    put(d, start + 20, 1, 4);
    put(d, start + 24, start, 8);
    put(d, start + 32, size, 8);
    put(d, start + 40, text_at - start, 8);
    put(d, start + 48, text_len, 8);
    put(d, start + 56, text_crc, 4);
    put(d, start, crc(d, start + 4, 508), 4);
  }
  const uint64_t l = 512;
  d.replace(l, 8, "LABELONE");
  put(d, l + 8, 1, 8);
  put(d, l + 20, 32, 4);
  d.replace(l + 24, 8, "LVM2 001");
  d.replace(l + 32, 32, std::string(32, 'U'));
  put(d, l + 64, d.size(), 8);
  uint64_t pos = l + 72;
  put(d, pos, text_at + text_len, 8);  // one data area, then its terminator
  pos += 32;
  for (size_t k = 0; k < areas; ++k, pos += 16) {
    put(d, pos, first + 512 * k, 8);
    put(d, pos + 8, text_at + text_len - (first + 512 * k), 8);
  }
  put(d, l + 16, crc(d, l + 20, 492), 4);
  return d;
}

TEST(LvmLabel, OverlappingMetadataAreasCannotMultiplyTheTextRead) {
  // Eight areas naming one text: only as many copies as fit the per-label
  // budget are read, the others are problems.
  const size_t text_len = 3u << 20;
  MemoryDisk pv(pv_with_overlapping_areas(8, text_len), "pv-overlap");
  auto label = read_lvm_label(pv);
  ASSERT_TRUE(label.has_value());
  const size_t fit = static_cast<size_t>(kLvmMaxLabelText / text_len);
  ASSERT_LT(fit, 8u);
  EXPECT_EQ(label->metadata.size(), fit);
  ASSERT_EQ(label->problems.size(), 8 - fit);
  EXPECT_NE(label->problems[0].find("not read"), std::string::npos) << label->problems[0];
}

TEST(LvmLabel, MetadataOfManyPvsIsBoundedPerBackup) {
  // The same PV offered as many candidates (as many partitions each holding
  // such a PV would be): past the backup's budget their metadata is dropped.
  const size_t text_len = 2u << 20;
  auto pv = std::make_shared<MemoryDisk>(pv_with_overlapping_areas(8, text_len), "pv-overlap");
  const auto per_label = read_lvm_label(*pv)->metadata.size() * text_len;
  ASSERT_GT(per_label, 0u);
  const size_t kept = static_cast<size_t>(kLvmMaxBackupText / per_label);
  std::vector<LvmPvCandidate> candidates;
  for (size_t i = 0; i < kept + 2; ++i) candidates.push_back(LvmPvCandidate{pv, "part" + std::to_string(i + 1)});
  const LvmAssembly a = assemble_lvm(candidates);
  size_t dropped = 0;
  for (const auto& e : a.errors)
    if (e.find("metadata not used") != std::string::npos) ++dropped;
  EXPECT_EQ(dropped, 2u);
  EXPECT_TRUE(a.lvs.empty());
}

// ---- block devices the LVs are made of ----------------------------------------

TEST(LvmBlocks, ConcatAndStripedRefuseInconsistentParts) {
  auto a = std::make_shared<MemoryDisk>(std::string(4096, 'a'));
  auto b = std::make_shared<MemoryDisk>(std::string(8192, 'b'));
  EXPECT_THROW(make_striped({a, b}, 1024, "x"), Error);   // different sizes
  EXPECT_THROW(make_striped({a, a}, 3000, "x"), Error);   // not a multiple
  EXPECT_THROW(make_concat({}, "x"), Error);
  auto c = make_concat({a, b}, "ab");
  EXPECT_EQ(c->size(), 12288u);
  EXPECT_EQ(read_range(*c, 4090, 12), "aaaaaabbbbbb");
  auto s = make_striped({a, std::make_shared<MemoryDisk>(std::string(4096, 'c'))}, 1024, "ac");
  EXPECT_EQ(read_range(*s, 1020, 8), "aaaacccc");
  EXPECT_EQ(read_range(*s, 2044, 8), "ccccaaaa");
}

}  // namespace
}  // namespace sendense
