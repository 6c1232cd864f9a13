// Partition tables, whole-disk detection and volume discovery over real
// images made at test time by the real tools (sfdisk, mkfs.*, mkntfs,
// mkswap, cryptsetup, pvcreate), plus hand-made damaged tables.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>

#include "readers/block/block_device.h"
#include "readers/common/error.h"
#include "readers/volume/volume.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using test::run;
using test::run_ok;
using test::shell_quote;
using test::TempDir;

constexpr uint64_t MiB = 1024 * 1024;

// ---- helpers ------------------------------------------------------------------

void make_sparse(const std::string& path, uint64_t bytes) {
  run_ok("truncate -s " + std::to_string(bytes) + " " + shell_quote(path));
}

void sfdisk(const std::string& path, const std::string& script) {
  run_ok("printf " + shell_quote(script) + " | sfdisk -q " + shell_quote(path));
}

// Copies `fs` into `disk` at byte `offset` without growing or un-sparsing it.
void dd_into(const std::string& fs, const std::string& disk, uint64_t offset) {
  ASSERT_EQ(offset % MiB, 0u);
  run_ok("dd if=" + shell_quote(fs) + " of=" + shell_quote(disk) + " bs=1M seek=" + std::to_string(offset / MiB) +
         " conv=notrunc,sparse status=none");
}

// What `sfdisk -J` says: partition number -> (start sector, size in sectors, type, name).
struct SfdiskPart {
  uint64_t start = 0;
  uint64_t size = 0;
  std::string type;
  std::string name;
};

std::map<uint32_t, SfdiskPart> sfdisk_json(const std::string& path) {
  const std::string out = run_ok("sfdisk -J " + shell_quote(path) + " 2>/dev/null");
  std::map<uint32_t, SfdiskPart> parts;
  const auto j = nlohmann::json::parse(out);
  for (const auto& p : j.at("partitiontable").at("partitions")) {
    const std::string node = p.at("node");
    const uint32_t number = static_cast<uint32_t>(std::stoul(node.substr(path.size())));
    SfdiskPart sp;
    sp.start = p.at("start");
    sp.size = p.at("size");
    sp.type = p.at("type");
    if (p.contains("name")) sp.name = p.at("name");
    for (char& c : sp.type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    parts[number] = sp;
  }
  return parts;
}

// Makes a filesystem with `mkfs` (a command line, the image path appended)
// the size of partition `number` of `disk` (as sfdisk reports it in `parts`)
// and copies it there.
void mkfs_into_partition(const TempDir& dir, const std::string& disk, const std::map<uint32_t, SfdiskPart>& parts,
                         uint32_t number, const std::string& mkfs) {
  const std::string fs = dir / ("p" + std::to_string(number) + ".img");
  make_sparse(fs, parts.at(number).size * 512);
  run_ok(mkfs + " " + shell_quote(fs) + " >/dev/null");
  dd_into(fs, disk, parts.at(number).start * 512);
}

void expect_matches_sfdisk(const PartitionTable& t, const std::string& path, bool mbr) {
  const auto want = sfdisk_json(path);
  ASSERT_EQ(t.partitions.size(), want.size());
  for (const Partition& p : t.partitions) {
    SCOPED_TRACE("partition " + std::to_string(p.number));
    auto it = want.find(p.number);
    ASSERT_NE(it, want.end());
    EXPECT_EQ(p.offset, it->second.start * 512);
    EXPECT_EQ(p.length, it->second.size * 512);
    EXPECT_EQ(p.type, mbr ? "0x" + (it->second.type.size() == 1 ? "0" + it->second.type : it->second.type)
                          : it->second.type);
    EXPECT_EQ(p.name, it->second.name);
  }
  for (size_t i = 1; i < t.partitions.size(); ++i) EXPECT_LT(t.partitions[i - 1].number, t.partitions[i].number);
}

const Volume* find_volume(const DiskLayout& l, const std::string& name) {
  for (const Volume& v : l.volumes)
    if (v.name == name) return &v;
  return nullptr;
}

void put_le16(std::string& s, size_t off, uint16_t v) {
  s[off] = static_cast<char>(v & 0xFF);
  s[off + 1] = static_cast<char>(v >> 8);
}
void put_le32(std::string& s, size_t off, uint32_t v) {
  put_le16(s, off, static_cast<uint16_t>(v & 0xFFFF));
  put_le16(s, off + 2, static_cast<uint16_t>(v >> 16));
}
uint32_t get_le32(const std::string& s, size_t off) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[off + static_cast<size_t>(i)]);
  return v;
}

// Writes an MBR/EBR slot in the sector at `lba` and that sector's 0x55AA.
void put_mbr_entry(std::string& img, uint64_t lba, int slot, uint8_t type, uint32_t start, uint32_t sectors) {
  const size_t base = lba * 512;
  const size_t off = base + 446 + 16 * static_cast<size_t>(slot);
  img[off] = 0;
  img[off + 4] = static_cast<char>(type);
  put_le32(img, off + 8, start);
  put_le32(img, off + 12, sectors);
  img[base + 510] = static_cast<char>(0x55);
  img[base + 511] = static_cast<char>(0xAA);
}

uint32_t crc32(const std::string& s, size_t off, size_t len) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < len; ++i) {
    c ^= static_cast<unsigned char>(s[off + i]);
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}

// Rewrites the GPT header CRC at sector `lba` after editing its fields.
void fix_gpt_header_crc(std::string& img, uint64_t lba) {
  const size_t base = lba * 512;
  const uint32_t header_size = get_le32(img, base + 12);
  put_le32(img, base + 16, 0);
  put_le32(img, base + 16, crc32(img, base, header_size));
}

// Expects read_partition_table (and discover_volumes) to fail with EIO and a
// message naming the disk and containing `what`.
void expect_damaged(const std::string& path, const std::string& what) {
  BlockDevicePtr disk = open_raw_image(path);
  try {
    PartitionTable t = read_partition_table(*disk);
    ADD_FAILURE() << "no error for " << path << "; scheme " << t.scheme << ", " << t.partitions.size()
                  << " partitions";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), EIO) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
  EXPECT_THROW(discover_volumes(disk), Error);
}

// A BlockDevice over bytes in memory, for the fuzz loop.
class MemoryDevice final : public BlockDevice {
 public:
  explicit MemoryDevice(std::string bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  std::string describe() const override { return "memory-disk"; }
  void read_at(uint64_t offset, std::span<std::byte> buf) const override {
    if (offset > bytes_.size() || buf.size() > bytes_.size() - offset)
      throw Error(EIO, "read past the end at " + std::to_string(offset), describe());
    std::memcpy(buf.data(), bytes_.data() + offset, buf.size());
  }

 private:
  std::string bytes_;
};

// ---- detection ----------------------------------------------------------------

TEST(VolumeDetect, Names) {
  EXPECT_STREQ(to_string(FsType::ext4), "ext4");
  EXPECT_STREQ(to_string(FsType::lvm_pv), "lvm-pv");
  EXPECT_STREQ(to_string(FsType::unknown), "unknown");
}

TEST(VolumeDetect, TinyAndEmptyDevicesAreUnknown) {
  TempDir dir;
  for (uint64_t size : {0ull, 100ull, 512ull, 1500ull, 4096ull, 70000ull}) {
    const std::string path = dir / ("z" + std::to_string(size));
    make_sparse(path, size);
    BlockDevicePtr dev = open_raw_image(path);
    EXPECT_EQ(detect_filesystem(*dev), FsType::unknown) << size;
    PartitionTable t = read_partition_table(*dev);
    EXPECT_EQ(t.scheme, "none");
    EXPECT_TRUE(t.partitions.empty());
    DiskLayout l = discover_volumes(dev);
    ASSERT_EQ(l.volumes.size(), 1u);
    EXPECT_EQ(l.volumes[0].name, "disk");
  }
}

TEST(VolumeDetect, ExtFlavours) {
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  TempDir dir;
  const std::pair<const char*, FsType> cases[] = {
      {"mkfs.ext2 -q -F", FsType::ext2}, {"mkfs.ext3 -q -F", FsType::ext3}, {"mkfs.ext4 -q -F", FsType::ext4},
      // ext2 with an ext4-only feature is ext4 for blkid too.
      {"mkfs.ext2 -q -F -O extents", FsType::ext4},
  };
  for (const auto& [cmd, want] : cases) {
    const std::string path = dir / "fs.img";
    std::remove(path.c_str());
    make_sparse(path, 4 * MiB);
    run_ok(std::string(cmd) + " " + shell_quote(path));
    EXPECT_EQ(detect_filesystem(*open_raw_image(path)), want) << cmd;
  }
}

// Whole-device detection of each type the tools can make; each also gives
// scheme "none" and a single "disk" volume of that type.
struct WholeCase {
  const char* tool;
  uint64_t size;
  const char* command;  // %s: the image path
  FsType type;
};

class WholeDisk : public ::testing::TestWithParam<WholeCase> {};

TEST_P(WholeDisk, SchemeNoneAndOneDiskVolume) {
  const WholeCase& c = GetParam();
  SENDENSE_REQUIRE_TOOL(c.tool);
  TempDir dir;
  const std::string path = dir / "disk.raw";
  make_sparse(path, c.size);
  test::write_file(dir / "key", "not-a-secret");
  std::string cmd = c.command;
  const auto pos = cmd.find("%s");
  cmd.replace(pos, 2, shell_quote(path));
  const auto key = cmd.find("%k");
  if (key != std::string::npos) cmd.replace(key, 2, shell_quote(dir / "key"));
  run_ok(cmd);

  BlockDevicePtr disk = open_raw_image(path);
  EXPECT_EQ(detect_filesystem(*disk), c.type);
  PartitionTable t = read_partition_table(*disk);
  EXPECT_EQ(t.scheme, "none");
  EXPECT_TRUE(t.partitions.empty());
  DiskLayout l = discover_volumes(disk);
  ASSERT_EQ(l.volumes.size(), 1u);
  EXPECT_EQ(l.volumes[0].name, "disk");
  EXPECT_EQ(l.volumes[0].partition, 0u);
  EXPECT_EQ(l.volumes[0].offset, 0u);
  EXPECT_EQ(l.volumes[0].length, c.size);
  EXPECT_EQ(l.volumes[0].type, c.type);
  EXPECT_EQ(l.volumes[0].device, disk);
}

INSTANTIATE_TEST_SUITE_P(
    Types, WholeDisk,
    ::testing::Values(WholeCase{"mkfs.ext4", 8 * MiB, "mkfs.ext4 -q -F %s", FsType::ext4},
                      WholeCase{"mkfs.ext3", 8 * MiB, "mkfs.ext3 -q -F %s", FsType::ext3},
                      WholeCase{"mkntfs", 8 * MiB, "mkntfs -q -F -Q %s", FsType::ntfs},
                      WholeCase{"mkfs.fat", 8 * MiB, "mkfs.fat %s >/dev/null", FsType::fat},
                      WholeCase{"mkfs.fat", 64 * MiB, "mkfs.fat -F 32 %s >/dev/null", FsType::fat},
                      WholeCase{"mkfs.fat", 2 * MiB, "mkfs.fat -F 12 %s >/dev/null", FsType::fat},
                      WholeCase{"mkswap", 4 * MiB, "mkswap %s >/dev/null", FsType::swap},
                      WholeCase{"mkfs.xfs", 320 * MiB, "mkfs.xfs -q -f %s", FsType::xfs},
                      WholeCase{"mkfs.btrfs", 128 * MiB, "mkfs.btrfs -q -f %s", FsType::btrfs},
                      WholeCase{"cryptsetup", 20 * MiB,
                                "cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 "
                                "--pbkdf-force-iterations 1000 --key-file %k %s",
                                FsType::luks},
                      WholeCase{"cryptsetup", 4 * MiB,
                                "cryptsetup luksFormat --batch-mode --type luks1 --pbkdf-force-iterations 1000 "
                                "--key-file %k %s",
                                FsType::luks}),
    [](const ::testing::TestParamInfo<WholeCase>& param_info) {
      std::string n = std::string(to_string(param_info.param.type)) + "_" + std::to_string(param_info.param.size / MiB) + "MiB";
      for (char& c : n)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return n;
    });

TEST(VolumeDetect, LvmPhysicalVolume) {
  SENDENSE_REQUIRE_TOOL("pvcreate");
  SENDENSE_REQUIRE_TOOL("losetup");
  TempDir dir;
  const std::string path = dir / "pv.raw";
  make_sparse(path, 8 * MiB);
  test::CommandResult loop = run("losetup -f --show " + shell_quote(path));
  if (loop.status != 0 || loop.output.rfind("/dev/loop", 0) != 0)
    SENDENSE_SKIP("no loop device available: " << loop.output);
  const std::string dev = loop.output.substr(0, loop.output.find('\n'));
  test::CommandResult pv = run("LVM_SUPPRESS_FD_WARNINGS=1 pvcreate -y -ff " + shell_quote(dev));
  run_ok("losetup -d " + shell_quote(dev));
  ASSERT_EQ(pv.status, 0) << pv.output;

  BlockDevicePtr disk = open_raw_image(path);
  EXPECT_EQ(detect_filesystem(*disk), FsType::lvm_pv);
  EXPECT_EQ(read_partition_table(*disk).scheme, "none");
  DiskLayout l = discover_volumes(disk);
  ASSERT_EQ(l.volumes.size(), 1u);
  EXPECT_EQ(l.volumes[0].type, FsType::lvm_pv);
}

// ---- MBR ------------------------------------------------------------------------

TEST(VolumeMbr, PrimariesAndLogicalsMatchSfdisk) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  SENDENSE_REQUIRE_TOOL("mkfs.fat");
  SENDENSE_REQUIRE_TOOL("mkswap");
  TempDir dir;
  const std::string disk_path = dir / "mbr.raw";
  make_sparse(disk_path, 32 * MiB);
  // 1: ext4 4 MiB, 2: fat 4 MiB, 3: extended 20 MiB holding 5: ext3, 6: swap, 7: ext2.
  sfdisk(disk_path,
         "label: dos\n"
         "start=2048, size=8192, type=83\n"
         "start=10240, size=8192, type=c\n"
         "start=18432, size=40960, type=5\n"
         "start=20480, size=8192, type=83\n"
         "start=30720, size=4096, type=82\n"
         "start=36864, size=16384, type=83\n");
  const auto want = sfdisk_json(disk_path);
  ASSERT_EQ(want.size(), 6u) << "sfdisk made a different layout";
  ASSERT_TRUE(want.count(5) && want.count(6) && want.count(7));

  auto mkfs_into = [&](uint32_t number, const std::string& mkfs) { mkfs_into_partition(dir, disk_path, want, number, mkfs); };
  mkfs_into(1, "mkfs.ext4 -q -F");
  mkfs_into(2, "mkfs.fat");
  mkfs_into(5, "mkfs.ext3 -q -F");
  mkfs_into(6, "mkswap");
  mkfs_into(7, "mkfs.ext2 -q -F");

  BlockDevicePtr disk = open_raw_image(disk_path);
  PartitionTable t = read_partition_table(*disk);
  EXPECT_EQ(t.scheme, "mbr");
  EXPECT_TRUE(t.warnings.empty());
  expect_matches_sfdisk(t, disk_path, true);

  DiskLayout l = discover_volumes(disk);
  ASSERT_EQ(l.volumes.size(), 5u);  // the extended container is not a volume
  EXPECT_EQ(find_volume(l, "part3"), nullptr);
  const std::pair<const char*, FsType> types[] = {
      {"part1", FsType::ext4}, {"part2", FsType::fat}, {"part5", FsType::ext3},
      {"part6", FsType::swap}, {"part7", FsType::ext2}};
  for (const auto& [name, type] : types) {
    const Volume* v = find_volume(l, name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_EQ(v->type, type) << name;
    EXPECT_EQ(v->partition, static_cast<uint32_t>(std::stoul(std::string(name).substr(4))));
    EXPECT_EQ(v->offset, want.at(v->partition).start * 512);
    EXPECT_EQ(v->length, want.at(v->partition).size * 512);
    ASSERT_TRUE(v->device);
    EXPECT_EQ(v->device->size(), v->length);
    EXPECT_NE(v->device->describe().find(name), std::string::npos);
  }
}

TEST(VolumeMbr, EmptyTableHasNoPartitions) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = dir / "empty.raw";
  make_sparse(path, 4 * MiB);
  sfdisk(path, "label: dos\n");
  BlockDevicePtr disk = open_raw_image(path);
  PartitionTable t = read_partition_table(*disk);
  EXPECT_EQ(t.scheme, "mbr");
  EXPECT_TRUE(t.partitions.empty());
  EXPECT_TRUE(discover_volumes(disk).volumes.empty());
}

// A disk that was a whole-disk ext4 once and then got a partition table keeps
// the old superblock at 1024 (sfdisk does not wipe it): the table wins.
TEST(VolumeMbr, StaleWholeDiskSignatureUnderTable) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  TempDir dir;
  const std::string path = dir / "stale.raw";
  make_sparse(path, 8 * MiB);
  run_ok("mkfs.ext4 -q -F " + shell_quote(path));
  sfdisk(path, "label: dos\nstart=4096, size=8192, type=83\n");
  BlockDevicePtr disk = open_raw_image(path);
  ASSERT_EQ(detect_filesystem(*disk), FsType::ext4) << "sfdisk wiped the old superblock; test premise gone";
  PartitionTable t = read_partition_table(*disk);
  EXPECT_EQ(t.scheme, "mbr");
  ASSERT_EQ(t.partitions.size(), 1u);
  ASSERT_EQ(t.warnings.size(), 1u);
  EXPECT_NE(t.warnings[0].find("stale ext4"), std::string::npos) << t.warnings[0];
}

TEST(VolumeMbr, OverlappingPartitions) {
  TempDir dir;
  const std::string path = dir / "overlap.raw";
  std::string img(4 * MiB, '\0');
  put_mbr_entry(img, 0, 0, 0x83, 2048, 4096);
  put_mbr_entry(img, 0, 1, 0x83, 4096, 2048);  // starts inside partition 1
  test::write_file(path, img);
  expect_damaged(path, "partitions 1");
  expect_damaged(path, "overlap");
}

TEST(VolumeMbr, LogicalOverlappingPrimary) {
  TempDir dir;
  const std::string path = dir / "overlap2.raw";
  std::string img(4 * MiB, '\0');
  put_mbr_entry(img, 0, 0, 0x83, 2048, 1024);
  put_mbr_entry(img, 0, 1, 0x05, 4096, 4096);
  put_mbr_entry(img, 0, 2, 0x83, 6000, 100);   // a primary inside the extended partition
  put_mbr_entry(img, 4096, 0, 0x83, 2048, 1024);
  test::write_file(path, img);
  expect_damaged(path, "overlap");
}

TEST(VolumeMbr, PartitionPastTheEnd) {
  TempDir dir;
  const std::string path = dir / "pastend.raw";
  std::string img(4 * MiB, '\0');  // 8192 sectors
  put_mbr_entry(img, 0, 0, 0x83, 2048, 2048);
  put_mbr_entry(img, 0, 1, 0x83, 4096, 8192);
  test::write_file(path, img);
  expect_damaged(path, "partition 2");
  expect_damaged(path, "past the end of the disk");
}

TEST(VolumeMbr, LogicalPastTheEndOfExtended) {
  TempDir dir;
  const std::string path = dir / "logicalpast.raw";
  std::string img(4 * MiB, '\0');
  put_mbr_entry(img, 0, 0, 0x05, 2048, 2048);
  put_mbr_entry(img, 2048, 0, 0x83, 2048, 1024);  // starts at the end of the extended partition
  test::write_file(path, img);
  expect_damaged(path, "partition 5");
}

TEST(VolumeMbr, EbrChainLoops) {
  TempDir dir;
  const std::string path = dir / "loop.raw";
  std::string img(4 * MiB, '\0');
  put_mbr_entry(img, 0, 0, 0x05, 2048, 4096);
  // EBR A at 2048 -> EBR B at 3072 -> EBR A again.
  put_mbr_entry(img, 2048, 0, 0x83, 64, 512);
  put_mbr_entry(img, 2048, 1, 0x05, 1024, 1024);
  put_mbr_entry(img, 3072, 0, 0x83, 64, 512);
  put_mbr_entry(img, 3072, 1, 0x05, 0, 1024);
  test::write_file(path, img);
  expect_damaged(path, "loops");
}

TEST(VolumeMbr, EbrPointingAtItself) {
  TempDir dir;
  const std::string path = dir / "self.raw";
  std::string img(4 * MiB, '\0');
  put_mbr_entry(img, 0, 0, 0x0F, 2048, 4096);
  put_mbr_entry(img, 2048, 1, 0x05, 0, 1024);
  test::write_file(path, img);
  expect_damaged(path, "loops");
}

TEST(VolumeMbr, TruncatedDiskImage) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = dir / "trunc.raw";
  make_sparse(path, 16 * MiB);
  sfdisk(path, "label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=20480, type=5\n"
               "start=12288, size=8192, type=83\n");
  make_sparse(path, 8 * MiB);  // cut in the middle of the extended partition
  expect_damaged(path, "past the end of the disk");
}

// Bytes 0x55AA with boot code but invalid boot flags is no table at all.
TEST(VolumeMbr, BootCodeWithoutTable) {
  TempDir dir;
  const std::string path = dir / "bootcode.raw";
  std::string img(1 * MiB, '\0');
  for (size_t i = 0; i < 510; ++i) img[i] = static_cast<char>(0x90 + i % 7);
  img[510] = static_cast<char>(0x55);
  img[511] = static_cast<char>(0xAA);
  test::write_file(path, img);
  PartitionTable t = read_partition_table(*open_raw_image(path));
  EXPECT_EQ(t.scheme, "none");
  EXPECT_TRUE(t.partitions.empty());
}

// ---- GPT ------------------------------------------------------------------------

constexpr const char* kGptScript =
    "label: gpt\n"
    "start=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI system\"\n"
    "start=10240, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"données\"\n"
    "start=20480, size=2048, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name=\"swap\"\n"
    "start=24576, size=4096, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n";

std::string make_gpt_disk(const TempDir& dir, const std::string& name) {
  const std::string path = dir / name;
  make_sparse(path, 16 * MiB);
  sfdisk(path, kGptScript);
  return path;
}

TEST(VolumeGpt, NamedPartitionsMatchSfdisk) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  SENDENSE_REQUIRE_TOOL("mkfs.fat");
  SENDENSE_REQUIRE_TOOL("mkfs.ext4");
  SENDENSE_REQUIRE_TOOL("mkswap");
  SENDENSE_REQUIRE_TOOL("mkntfs");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  const auto want = sfdisk_json(path);
  auto mkfs_into = [&](uint32_t number, const std::string& mkfs) { mkfs_into_partition(dir, path, want, number, mkfs); };
  mkfs_into(1, "mkfs.fat");
  mkfs_into(2, "mkfs.ext4 -q -F");
  mkfs_into(3, "mkswap");
  mkfs_into(4, "mkntfs -q -F -Q");

  BlockDevicePtr disk = open_raw_image(path);
  PartitionTable t = read_partition_table(*disk);
  EXPECT_EQ(t.scheme, "gpt");
  EXPECT_TRUE(t.warnings.empty()) << t.warnings.front();
  expect_matches_sfdisk(t, path, false);
  ASSERT_EQ(t.partitions.size(), 4u);
  EXPECT_EQ(t.partitions[0].type, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
  EXPECT_EQ(t.partitions[0].name, "EFI system");
  EXPECT_EQ(t.partitions[1].name, "données");
  EXPECT_EQ(t.partitions[3].name, "");

  DiskLayout l = discover_volumes(disk);
  ASSERT_EQ(l.volumes.size(), 4u);
  EXPECT_EQ(find_volume(l, "part1")->type, FsType::fat);
  EXPECT_EQ(find_volume(l, "part2")->type, FsType::ext4);
  EXPECT_EQ(find_volume(l, "part3")->type, FsType::swap);
  EXPECT_EQ(find_volume(l, "part4")->type, FsType::ntfs);
}

// Big filesystems in partitions of a sparse disk: XFS, btrfs, LUKS, LVM-less.
TEST(VolumeGpt, LargeFilesystemsInPartitions) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  SENDENSE_REQUIRE_TOOL("mkfs.xfs");
  SENDENSE_REQUIRE_TOOL("mkfs.btrfs");
  SENDENSE_REQUIRE_TOOL("cryptsetup");
  TempDir dir;
  const std::string path = dir / "big.raw";
  make_sparse(path, 512 * MiB);
  sfdisk(path,
         "label: gpt\n"
         "start=2048, size=655360, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"     // 320 MiB xfs
         "start=657408, size=262144, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"   // 128 MiB btrfs
         "start=919552, size=40960, type=CA7D7CCB-63ED-4C53-861C-1742536059CC\n");  // 20 MiB luks
  const auto want = sfdisk_json(path);
  test::write_file(dir / "key", "not-a-secret");
  const std::string cmds[] = {"mkfs.xfs -q -f", "mkfs.btrfs -q -f",
                              "cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 "
                              "--pbkdf-force-iterations 1000 --key-file " + shell_quote(dir / "key")};
  for (uint32_t n = 1; n <= 3; ++n) {
    const std::string fs = dir / ("p" + std::to_string(n) + ".img");
    make_sparse(fs, want.at(n).size * 512);
    run_ok(cmds[n - 1] + " " + shell_quote(fs));
    dd_into(fs, path, want.at(n).start * 512);
    std::remove(fs.c_str());
  }
  DiskLayout l = discover_volumes(open_raw_image(path));
  EXPECT_EQ(l.table.scheme, "gpt");
  expect_matches_sfdisk(l.table, path, false);
  ASSERT_EQ(l.volumes.size(), 3u);
  EXPECT_EQ(l.volumes[0].type, FsType::xfs);
  EXPECT_EQ(l.volumes[1].type, FsType::btrfs);
  EXPECT_EQ(l.volumes[2].type, FsType::luks);
}

TEST(VolumeGpt, DamagedPrimaryUsesBackup) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  const auto want = sfdisk_json(path);
  // Corrupt one byte of the primary header (its first-usable-LBA field).
  run_ok("printf '\\377' | dd of=" + shell_quote(path) + " bs=1 seek=$((512 + 40)) conv=notrunc status=none");
  PartitionTable t = read_partition_table(*open_raw_image(path));
  EXPECT_EQ(t.scheme, "gpt");
  ASSERT_EQ(t.partitions.size(), want.size());
  for (const Partition& p : t.partitions) EXPECT_EQ(p.offset, want.at(p.number).start * 512);
  EXPECT_EQ(t.partitions[1].name, "données");
  ASSERT_EQ(t.warnings.size(), 1u);
  EXPECT_NE(t.warnings[0].find("primary GPT header damaged"), std::string::npos) << t.warnings[0];
}

TEST(VolumeGpt, DamagedPrimaryEntriesUseBackup) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  // Change partition 1's first LBA in the primary entry array only.
  run_ok("printf '\\001' | dd of=" + shell_quote(path) + " bs=1 seek=$((1024 + 32)) conv=notrunc status=none");
  PartitionTable t = read_partition_table(*open_raw_image(path));
  ASSERT_FALSE(t.partitions.empty());
  EXPECT_EQ(t.partitions[0].offset, 2048u * 512);
  ASSERT_EQ(t.warnings.size(), 1u);
  EXPECT_NE(t.warnings[0].find("checksum"), std::string::npos) << t.warnings[0];
}

TEST(VolumeGpt, DamagedBackupIsAWarning) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  run_ok("printf 'XXXX' | dd of=" + shell_quote(path) + " bs=1 seek=$((16 * 1024 * 1024 - 512)) conv=notrunc "
         "status=none");
  PartitionTable t = read_partition_table(*open_raw_image(path));
  EXPECT_EQ(t.partitions.size(), 4u);
  ASSERT_EQ(t.warnings.size(), 1u);
  EXPECT_NE(t.warnings[0].find("backup GPT header damaged"), std::string::npos) << t.warnings[0];
}

TEST(VolumeGpt, BothHeadersDamaged) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  run_ok("printf 'XXXX' | dd of=" + shell_quote(path) + " bs=1 seek=512 conv=notrunc status=none");
  run_ok("printf 'XXXX' | dd of=" + shell_quote(path) + " bs=1 seek=$((16 * 1024 * 1024 - 512)) conv=notrunc "
         "status=none");
  expect_damaged(path, "GPT");
  expect_damaged(path, "both");
}

TEST(VolumeGpt, TruncatedDiskImage) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  make_sparse(path, 11 * MiB);  // partitions 3 and 4 now end past the end
  expect_damaged(path, "past the end of the disk");
}

// Header fields that would make a naive reader allocate gigabytes, with a
// valid header CRC: refused as damaged, the backup used instead.
TEST(VolumeGpt, HostileHeaderFields) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  const std::string good = test::read_file(path);
  struct Field {
    size_t offset;
    uint32_t value;
  };
  const Field fields[] = {{80, 0xFFFFFFFFu}, {84, 0xFFFFFFF8u}, {84, 64}, {84, 130}, {12, 0xFFFFFFFFu},
                          {72, 0xFFFFFFFFu}, {76, 0xFFFFFFFFu}, {80, 0}};
  for (const Field& f : fields) {
    SCOPED_TRACE("field at " + std::to_string(f.offset));
    std::string img = good;
    put_le32(img, 512 + f.offset, f.value);
    if (f.offset != 12) fix_gpt_header_crc(img, 1);
    test::write_file(path, img);
    PartitionTable t = read_partition_table(*open_raw_image(path));
    EXPECT_EQ(t.partitions.size(), 4u);
    ASSERT_EQ(t.warnings.size(), 1u);
    EXPECT_NE(t.warnings[0].find("primary GPT header damaged"), std::string::npos) << t.warnings[0];
  }
}

TEST(VolumeGpt, OverlappingEntries) {
  SENDENSE_REQUIRE_TOOL("sfdisk");
  TempDir dir;
  const std::string path = make_gpt_disk(dir, "gpt.raw");
  std::string img = test::read_file(path);
  // Move partition 2's first LBA into partition 1, fix the entry and header CRCs.
  const size_t entry2 = 1024 + 128;
  put_le32(img, entry2 + 32, 9000);
  const uint32_t count = get_le32(img, 512 + 80);
  const uint32_t size = get_le32(img, 512 + 84);
  put_le32(img, 512 + 88, crc32(img, 1024, size_t{count} * size));
  fix_gpt_header_crc(img, 1);
  // And the backup the same way, so neither copy is usable as a way out.
  const uint64_t last = img.size() / 512 - 1;
  const uint64_t backup_entries = get_le32(img, last * 512 + 72);
  put_le32(img, backup_entries * 512 + 128 + 32, 9000);
  put_le32(img, last * 512 + 88, crc32(img, backup_entries * 512, size_t{count} * size));
  fix_gpt_header_crc(img, last);
  test::write_file(path, img);
  expect_damaged(path, "partitions 1");
  expect_damaged(path, "overlap");
}

// ---- whole-disk filesystems that look like an MBR -----------------------------

TEST(VolumeNone, NoTableNoFilesystem) {
  TempDir dir;
  const std::string path = dir / "zero.raw";
  make_sparse(path, 2 * MiB);
  DiskLayout l = discover_volumes(open_raw_image(path));
  EXPECT_EQ(l.table.scheme, "none");
  ASSERT_EQ(l.volumes.size(), 1u);
  EXPECT_EQ(l.volumes[0].name, "disk");
  EXPECT_EQ(l.volumes[0].type, FsType::unknown);
}

// A FAT boot sector whose boot-code bytes happen to form valid-looking MBR
// slots is still a whole-disk FAT, never a table of garbage partitions.
TEST(VolumeNone, FatBootSectorWithTableLikeBytes) {
  SENDENSE_REQUIRE_TOOL("mkfs.fat");
  TempDir dir;
  const std::string path = dir / "fat.raw";
  make_sparse(path, 8 * MiB);
  run_ok("mkfs.fat " + shell_quote(path) + " >/dev/null");
  std::string img = test::read_file(path);
  put_mbr_entry(img, 0, 0, 0x83, 2048, 4096);
  put_mbr_entry(img, 0, 1, 0x05, 8192, 4096);
  test::write_file(path, img);
  DiskLayout l = discover_volumes(open_raw_image(path));
  EXPECT_EQ(l.table.scheme, "none");
  ASSERT_EQ(l.volumes.size(), 1u);
  EXPECT_EQ(l.volumes[0].name, "disk");
  EXPECT_EQ(l.volumes[0].type, FsType::fat);
}

TEST(VolumeNone, NtfsBootSectorWithTableLikeBytes) {
  SENDENSE_REQUIRE_TOOL("mkntfs");
  TempDir dir;
  const std::string path = dir / "ntfs.raw";
  make_sparse(path, 8 * MiB);
  run_ok("mkntfs -q -F -Q " + shell_quote(path));
  std::string img = test::read_file(path);
  put_mbr_entry(img, 0, 0, 0x07, 63, 4096);
  test::write_file(path, img);
  DiskLayout l = discover_volumes(open_raw_image(path));
  EXPECT_EQ(l.table.scheme, "none");
  ASSERT_EQ(l.volumes.size(), 1u);
  EXPECT_EQ(l.volumes[0].type, FsType::ntfs);
}

// ---- robustness: random tables never crash, hang or throw anything but EIO ----

TEST(VolumeFuzz, RandomTablesGiveResultOrEio) {
  std::mt19937_64 rng(12345);
  auto r32 = [&](uint32_t mod) { return static_cast<uint32_t>(rng() % mod); };
  const uint32_t sectors = 2048;  // 1 MiB
  int parsed = 0;
  int refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string img(sectors * 512, '\0');
    if (r32(2) == 0) {
      // Random slots in random sectors.
      const int tables = 1 + r32(6);
      for (int k = 0; k < tables; ++k) {
        const uint64_t lba = k == 0 ? 0 : r32(sectors);
        for (int slot = 0; slot < 4; ++slot) {
          const uint8_t types[] = {0, 0x83, 0x05, 0x0F, 0x85, 0xEE, 0x07};
          const uint32_t start = r32(4) == 0 ? r32(0xFFFFFFFFu) : r32(sectors);
          const uint32_t size = r32(4) == 0 ? r32(0xFFFFFFFFu) : r32(sectors);
          put_mbr_entry(img, lba, slot, types[r32(7)], start, size);
        }
      }
    } else {
      // A valid table (primary 1, extended 2 with logicals 5-7), then a few
      // random bytes changed in its sectors.
      put_mbr_entry(img, 0, 0, 0x83, 64, 100);
      put_mbr_entry(img, 0, 1, 0x05, 512, 1500);
      put_mbr_entry(img, 512, 0, 0x83, 8, 100);
      put_mbr_entry(img, 512, 1, 0x05, 200, 300);
      put_mbr_entry(img, 712, 0, 0x83, 8, 100);
      put_mbr_entry(img, 712, 1, 0x05, 600, 300);
      put_mbr_entry(img, 1112, 0, 0x07, 8, 200);
      const uint64_t table_sectors[] = {0, 512, 712, 1112};
      const int changes = static_cast<int>(r32(4));
      for (int c = 0; c < changes; ++c)
        img[table_sectors[r32(4)] * 512 + 446 + r32(66)] = static_cast<char>(r32(256));
    }
    if (r32(3) == 0) {  // a GPT header with random fields and a valid CRC
      std::memcpy(&img[512], "EFI PART", 8);
      put_le32(img, 512 + 12, 92);
      put_le32(img, 512 + 24, 1);
      put_le32(img, 512 + 72, r32(8));
      put_le32(img, 512 + 80, r32(4) == 0 ? r32(0xFFFFFFFFu) : r32(300));
      put_le32(img, 512 + 84, r32(2) ? 128 : r32(0xFFFFFFFFu));
      for (size_t i = 1024; i < 1024 + 4 * 128; i += 4) put_le32(img, i, r32(3) == 0 ? r32(0xFFFFFFFFu) : r32(sectors));
      put_le32(img, 512 + 88, crc32(img, 1024, 128 * 128));
      fix_gpt_header_crc(img, 1);
    }
    auto disk = std::make_shared<MemoryDevice>(std::move(img));
    try {
      DiskLayout l = discover_volumes(disk);
      for (const Volume& v : l.volumes) {
        EXPECT_LE(v.offset + v.length, disk->size());
        EXPECT_LE(v.offset, disk->size());
      }
      if (l.table.scheme != "none") ++parsed;
    } catch (const Error& e) {
      ++refused;
      EXPECT_EQ(e.code(), EIO) << e.what();
      EXPECT_NE(std::string(e.what()).find("memory-disk"), std::string::npos) << e.what();
    }
  }
  // Both outcomes must have been exercised for the loop to mean anything.
  EXPECT_GT(parsed, 100);
  EXPECT_GT(refused, 100);
}

}  // namespace
}  // namespace sendense
