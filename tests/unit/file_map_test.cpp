// File maps (Filesystem::map_file over BlockDevice::map): where a file's
// bytes lie in the image files, which the daemon reads itself for a
// sandboxed worker's backup. Checked the way the daemon uses them: every
// byte copied from the image files by the map equals the source tree.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "readers/block/image_file.h"
#include "readers/engine/open_backup.h"
#include "readers/volume/volume.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using test::q;
using test::run_ok;
using test::TempDir;

struct Mapped {
  std::map<std::string, std::optional<std::vector<Extent>>> maps;  // by path, regular files only
  std::map<std::string, uint64_t> sizes;
};

void walk(Filesystem& fs, uint64_t dir, const std::string& prefix, Mapped& out) {
  for (const DirEntry& e : fs.readdir(dir)) {
    if (e.name == "." || e.name == ".." || e.name == "lost+found") continue;
    const auto a = fs.lookup(dir, e.name);
    ASSERT_TRUE(a) << prefix << e.name;
    if (S_ISDIR(a->mode)) {
      walk(fs, a->ino, prefix + e.name + "/", out);
    } else if (S_ISREG(a->mode)) {
      out.maps[prefix + e.name] = fs.map_file(a->ino, 1024);
      out.sizes[prefix + e.name] = a->size;
    }
  }
}

// The file's bytes as the daemon copies them: pread of each extent, zeros for holes.
std::string copy_by_map(const std::vector<Extent>& map) {
  std::string data;
  for (const Extent& e : map) {
    const size_t at = data.size();
    data.resize(at + e.length, '\0');
    if (e.file == nullptr) continue;
    const ssize_t n = ::pread(e.file->fd(), data.data() + at, e.length, static_cast<off_t>(e.offset));
    EXPECT_EQ(n, static_cast<ssize_t>(e.length)) << e.file->display() << " at " << e.offset;
  }
  return data;
}

std::map<std::string, std::string> files_of(const std::string& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root))
    if (e.is_regular_file()) out[std::filesystem::relative(e.path(), root).string()] = test::read_file(e.path());
  return out;
}

class FileMapTest : public ::testing::Test {
 protected:
  // Version 1 of a tree in ext4 in GPT as the base, version 2 (files
  // rewritten and added in place with debugfs) as a qcow2 overlay holding
  // only the clusters that differ: maps must follow the chain to the file
  // that holds each cluster.
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    const TempDir& d = *dir_;
    run_ok("set -e; mkdir -p " + q(d / "v1") + "; cd " + q(d / "v1") +
           "; for i in $(seq 1 60); do mkdir -p d$((i % 6)); seq $i $((i * 37)) > d$((i % 6))/f$i; done;"
           " head -c 300000 /dev/urandom > mid.bin; : > empty;"
           " printf head > sparse; truncate -s 900000 sparse; printf tail >> sparse");
    run_ok("mkfs.ext4 -q -F -b 4096 -d " + q(d / "v1") + " " + q(d / "v1.part") + " 16M");
    std::string commands;
    run_ok("set -e; cp -a " + q(d / "v1") + " " + q(d / "v2") + "; cd " + q(d / "v2") +
           "; for i in $(seq 1 60 7); do seq $((i * 5)) $((i * 91)) > d$((i % 6))/f$i; done;"
           " head -c 70000 /dev/urandom > new.bin");
    for (int i = 1; i <= 60; i += 7) {
      const std::string name = "d" + std::to_string(i % 6) + "/f" + std::to_string(i);
      commands += "rm /" + name + "\nwrite " + (d / "v2/") + name + " /" + name + "\n";
    }
    commands += "write " + (d / "v2/new.bin") + " /new.bin\n";
    run_ok("cp " + q(d / "v1.part") + " " + q(d / "v2.part") + " && printf '" + commands + "' | debugfs -w -f - " +
           q(d / "v2.part") + " >/dev/null 2>&1");
    make_disk(d / "v1.part", d / "v1.raw");
    make_disk(d / "v2.part", d / "v2.raw");
    source_ = new std::map<std::string, std::string>(files_of(d / "v2"));
    run_ok("qemu-img convert -q -f raw -O qcow2 " + q(d / "v1.raw") + " " + q(d / "base.qcow2"));
    // The overlays get only the 4 KiB blocks that differ (qemu-io writes;
    // all-zero ones as zero writes): with extended L2 entries, clusters
    // whose subclusters lie partly in the overlay, partly in the base.
    for (const char* name : {"top", "top-l2"}) {
      const std::string top = d / (std::string(name) + ".qcow2");
      run_ok("cd " + q(d.path()) + " && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2" +
             (std::string(name) == "top-l2" ? " -o extended_l2=on " : " ") + q(top));
      run_ok("python3 -c '\n"
             "import subprocess, sys\n"
             "a = open(sys.argv[1], \"rb\").read(); b = open(sys.argv[2], \"rb\").read(); cmds = []\n"
             "for off in range(0, len(b), 4096):\n"
             "    block = b[off:off + 4096]\n"
             "    if block == a[off:off + 4096]: continue\n"
             "    if block.count(0) == len(block): cmds += [\"-c\", \"write -z %d 4096\" % off]; continue\n"
             "    path = \"%s.%d\" % (sys.argv[3], off); open(path, \"wb\").write(block)\n"
             "    cmds += [\"-c\", \"write -s %s %d 4096\" % (path, off)]\n"
             "subprocess.run([\"qemu-io\", \"-f\", \"qcow2\", sys.argv[3]] + cmds, check=True, stdout=subprocess.DEVNULL)\n"
             "' " + q(d / "v1.raw") + " " + q(d / "v2.raw") + " " + q(top));
      // The chain reads as version 2.
      run_ok("qemu-img compare -q -f qcow2 -F raw " + q(top) + " " + q(d / "v2.raw"));
    }
    run_ok("qemu-img convert -q -c -f raw -O qcow2 " + q(d / "v2.raw") + " " + q(d / "zlib.qcow2"));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete source_;
  }

  static void make_disk(const std::string& part, const std::string& disk) {
    run_ok("truncate -s 18M " + q(disk) + " && printf 'label: gpt\\nstart=2048, size=32768\\n' | sfdisk -q " +
           q(disk) + " && dd if=" + q(part) + " of=" + q(disk) + " bs=1M seek=1 conv=notrunc status=none");
  }

  static Mapped map_all(const std::string& image, ImageFormat format, OpenedDisks& disks, OpenedVolumes& volumes) {
    disks = open_disks({{image, format}}, nullptr);
    const BackupLayout layout = discover_backup(disks.devices);
    EngineOptions engine;
    engine.label = "file-map-test";
    volumes = open_volumes(layout, engine);
    Mapped m;
    EXPECT_EQ(volumes.volumes.size(), 1u);
    if (volumes.volumes.size() == 1) walk(*volumes.volumes[0].fs, volumes.volumes[0].fs->root_ino(), "", m);
    return m;
  }

  // The volume of the qcow2 chain (version 2 over version 1).
  static Filesystem& open_top(OpenedDisks& disks, OpenedVolumes& volumes) {
    disks = open_disks({{*dir_ / "top.qcow2", ImageFormat::qcow2}}, nullptr);
    const BackupLayout layout = discover_backup(disks.devices);
    EngineOptions engine;
    volumes = open_volumes(layout, engine);
    return *volumes.volumes.at(0).fs;
  }

  void expect_maps_equal_source(const std::string& image) {
    OpenedDisks disks;
    OpenedVolumes volumes;
    const Mapped m = map_all(image, ImageFormat::qcow2, disks, volumes);
    ASSERT_EQ(m.maps.size(), source_->size());
    std::set<const ImageFile*> files;
    size_t holes = 0;
    for (const auto& [path, expected] : *source_) {
      ASSERT_TRUE(m.maps.count(path)) << path;
      const auto& map = m.maps.at(path);
      ASSERT_TRUE(map) << path << " has no map";
      uint64_t total = 0;
      for (const Extent& e : *map) {
        total += e.length;
        if (e.file) files.insert(e.file);
        else ++holes;
      }
      EXPECT_EQ(total, expected.size()) << path;
      EXPECT_TRUE(copy_by_map(*map) == expected) << path << " differs when copied by its map";
    }
    EXPECT_EQ(files.size(), 2u) << "maps name both the overlay and its backing file";
    EXPECT_GE(holes, 1u) << "the sparse file's hole";
  }

  static TempDir* dir_;
  static std::map<std::string, std::string>* source_;
};
TempDir* FileMapTest::dir_ = nullptr;
std::map<std::string, std::string>* FileMapTest::source_ = nullptr;

TEST_F(FileMapTest, EveryFileCopiedByItsMapThroughAQcow2ChainEqualsTheSource) {
  expect_maps_equal_source(*dir_ / "top.qcow2");
}

TEST_F(FileMapTest, ExtendedL2SubclustersMapAsTheyRead) { expect_maps_equal_source(*dir_ / "top-l2.qcow2"); }

TEST_F(FileMapTest, ARawDiskMapsToItself) {
  OpenedDisks disks;
  OpenedVolumes volumes;
  const Mapped m = map_all(*dir_ / "v2.raw", ImageFormat::raw, disks, volumes);
  ASSERT_EQ(m.maps.size(), source_->size());
  for (const auto& [path, expected] : *source_) {
    const auto& map = m.maps.at(path);
    ASSERT_TRUE(map) << path;
    EXPECT_TRUE(copy_by_map(*map) == expected) << path;
  }
}

TEST_F(FileMapTest, CompressedClustersHaveNoMap) {
  OpenedDisks disks;
  OpenedVolumes volumes;
  const Mapped m = map_all(*dir_ / "zlib.qcow2", ImageFormat::qcow2, disks, volumes);
  size_t unmapped = 0;
  for (const auto& [path, map] : m.maps) {
    if (m.sizes.at(path) == 0) {
      ASSERT_TRUE(map) << path;  // nothing stored: nothing compressed
      EXPECT_TRUE(map->empty()) << path;
    } else if (!map) {
      ++unmapped;
    }
  }
  // Every cluster qemu could compress is; a file whose blocks all lie in
  // clusters it left plain (random bytes) still maps.
  EXPECT_GT(unmapped, m.maps.size() / 2);
}

TEST_F(FileMapTest, AFileOfMoreExtentsThanAskedHasNoMap) {
  OpenedDisks disks;
  OpenedVolumes volumes;
  Filesystem& fs = open_top(disks, volumes);
  const auto a = fs.lookup(fs.root_ino(), "sparse");  // data, a hole, data: three extents
  ASSERT_TRUE(a);
  EXPECT_TRUE(fs.map_file(a->ino, 3));
  EXPECT_FALSE(fs.map_file(a->ino, 2));
}

// A read's map (Filesystem::map_read, what the daemon splices into its
// reply) names exactly the bytes that read would return, from any offset,
// holes and the chain's two files included, and nothing past the end.
TEST_F(FileMapTest, ReadMapsNameTheBytesOfTheirRead) {
  OpenedDisks disks;
  OpenedVolumes volumes;
  Filesystem& fs = open_top(disks, volumes);
  size_t mapped = 0;
  for (const auto& [path, expected] : *source_) {
    uint64_t ino = fs.root_ino();
    for (const auto& part : std::filesystem::path(path)) {
      const auto a = fs.lookup(ino, part.string());
      ASSERT_TRUE(a) << path;
      ino = a->ino;
    }
    const uint64_t handle = fs.open(ino);
    for (const uint64_t offset : {uint64_t{0}, uint64_t{1}, uint64_t{4095}, uint64_t{4096 + 17},
                                  uint64_t{expected.size() / 2}, uint64_t{expected.size()}, uint64_t{expected.size() + 9}})
      for (const size_t size : {size_t{1}, size_t{4096}, size_t{65536 + 3}, size_t{1} << 20}) {
        const auto map = fs.map_read(handle, offset, size);
        if (!map) continue;
        ++mapped;
        const std::string want = offset >= expected.size() ? "" : expected.substr(offset, size);
        EXPECT_TRUE(copy_by_map(*map) == want) << path << " at " << offset << " for " << size;
        EXPECT_LE(map->size(), Filesystem::kMaxReadExtents);
      }
    fs.release(handle);
  }
  EXPECT_GT(mapped, source_->size() * 20) << "most reads of a plain chain are mapped";
}

}  // namespace
}  // namespace sendense
