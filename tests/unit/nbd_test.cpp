// Images read through qemu-nbd (readers/block/nbd_image.cpp): qcow2 with
// zstd compression or extended L2 entries, VMDK, VHDX and mixed chains.
// Every image is made at test time by qemu-img / qemu-io; the reference is
// `qemu-img convert -O raw` of the same image. Refusals must happen before
// any qemu-nbd starts; the qemu-nbd process must be gone with the device.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "readers/block/block_device.h"
#include "readers/block/nbd_image.h"
#include "readers/common/error.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using test::read_file;
using test::run;
using test::run_ok;
using test::shell_quote;
using test::TempDir;
using test::write_file;

std::string read_range(const BlockDevice& dev, uint64_t offset, size_t len) {
  std::string out(len, '\0');
  dev.read_at(offset, std::as_writable_bytes(std::span<char>(out.data(), out.size())));
  return out;
}

template <typename Fn>
void expect_error(Fn&& fn, int code, const std::vector<std::string>& names) {
  try {
    fn();
    ADD_FAILURE() << "expected Error(" << std::strerror(code) << ")";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& n : names)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "'" << n << "' not in: " << e.what();
  }
}

::testing::AssertionResult same_bytes(const std::string& got, const std::string& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  auto mm = std::mismatch(got.begin(), got.end(), want.begin());
  if (mm.first == got.end()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "first difference at byte " << (mm.first - got.begin());
}

void qemu_io(const std::string& format, const std::string& image, const std::vector<std::string>& cmds) {
  std::string cmd = "qemu-io -f " + format;
  for (const auto& c : cmds) cmd += " -c " + shell_quote(c);
  run_ok(cmd + " " + shell_quote(image));
}

// The reference: qemu's own conversion of the whole image.
std::string reference_of(const std::string& image, const std::string& format, const TempDir& dir) {
  const std::string out = dir / "reference.raw";
  run_ok("qemu-img convert -f " + format + " -O raw " + shell_quote(image) + " " + shell_quote(out));
  return read_file(out);
}

// qemu-nbd processes started by this test process (their socket folder
// carries our pid; see nbd_image.h).
std::string our_servers() {
  return run("pgrep -af -- " + shell_quote("[q]emu-nbd-" + std::to_string(::getpid()) + "-")).output;
}

std::vector<std::string> our_folders() {
  std::vector<std::string> out;
  const std::string prefix = "qemu-nbd-" + std::to_string(::getpid()) + "-";
  for (const auto& e : std::filesystem::directory_iterator(nbd::runtime_base_dir()))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().string());
  return out;
}

// Reads the whole device in pieces of uneven sizes and offsets (requests
// crossing cluster, subcluster and extent boundaries).
std::string read_unevenly(const BlockDevice& dev) {
  std::string out;
  const uint64_t size = dev.size();
  uint64_t pos = 0;
  size_t step = 4097;
  while (pos < size) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(step, size - pos));
    out += read_range(dev, pos, n);
    pos += n;
    step = step * 3 % (3u << 20) + 511;
  }
  return out;
}

class NbdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SENDENSE_REQUIRE_TOOL("qemu-img");
    SENDENSE_REQUIRE_TOOL("qemu-io");
    SENDENSE_REQUIRE_TOOL("qemu-nbd");
  }
  void TearDown() override {
    EXPECT_EQ(our_servers(), "") << "a qemu-nbd outlived its device";
    EXPECT_TRUE(our_folders().empty()) << "a private qemu-nbd folder was left behind";
  }

  // Opens `image` as the daemon does (confined to its folder), checks the
  // reader and every byte against qemu-img convert.
  void expect_same_as_qemu(const std::string& image, ImageFormat format, const std::string& reader) {
    SCOPED_TRACE(image);
    TempDir ref_dir;
    const std::string want = reference_of(image, to_string(format), ref_dir);
    const std::string folder = std::filesystem::path(image).parent_path().string();
    BlockDevicePtr dev = open_image(image, format, folder, open_nbd_image);
    EXPECT_EQ(dev->reader(), reader);
    EXPECT_EQ(choose_reader(read_image_chain(image, format, folder)), reader);
    ASSERT_EQ(dev->size(), want.size());
    EXPECT_TRUE(same_bytes(read_unevenly(*dev), want));
    // One read of everything (several NBD requests of kMaxRequestBytes).
    EXPECT_TRUE(same_bytes(read_range(*dev, 0, want.size()), want));
    expect_error([&] { read_range(*dev, dev->size() - 10, 11); }, EIO, {image, "past the end"});
  }
};

// Fills `image` (qcow2) with patterns: plain, compressed and zero writes
// spread over the disk, some not cluster aligned.
void write_patterns(const std::string& image, const std::string& format, int seed,
                    const std::string& cluster = "64k") {
  const std::string p = std::to_string(0x20 + seed);
  qemu_io(format, image,
          {"write -P " + p + " 0 1M", "write -c -P 0x" + std::to_string(30 + seed) + " 2M " + cluster,
           "write -P 0x5a 3M 4k", "write -P 0x5b 3149824 1536", "write -z 1M 8k", "write -P 0x77 8380416 4096"});
}

TEST_F(NbdTest, ZstdChainOverPlainFull) {
  TempDir dir;
  run_ok("qemu-img create -q -f qcow2 " + shell_quote(dir / "full.qcow2") + " 8M");
  write_patterns(dir / "full.qcow2", "qcow2", 1);
  // A zstd-compressed full, and a zstd incremental over the plain full.
  run_ok("qemu-img convert -c -f qcow2 -O qcow2 -o compression_type=zstd " + shell_quote(dir / "full.qcow2") + " " +
         shell_quote(dir / "zfull.qcow2"));
  run_ok("cd " + shell_quote(dir.path()) +
         " && qemu-img create -q -f qcow2 -o compression_type=zstd -b full.qcow2 -F qcow2 inc.qcow2 8M");
  qemu_io("qcow2", dir / "inc.qcow2", {"write -c -P 0x61 64k 64k", "write -P 0x62 4M 100k", "write -z 0 4k"});
  // All read by our own reader (zstd clusters through libzstd).
  expect_same_as_qemu(dir / "zfull.qcow2", ImageFormat::qcow2, "qcow2");
  expect_same_as_qemu(dir / "inc.qcow2", ImageFormat::qcow2, "qcow2");
  expect_same_as_qemu(dir / "full.qcow2", ImageFormat::qcow2, "qcow2");
  const auto chain = read_image_chain(dir / "inc.qcow2", ImageFormat::qcow2, dir.path());
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[0].native_limit, "");
  EXPECT_EQ(chain[1].native_limit, "");
}

TEST_F(NbdTest, ExtendedL2) {
  TempDir dir;
  run_ok("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k " + shell_quote(dir / "l2.qcow2") + " 8M");
  // Subcluster-sized writes (4k subclusters) and a zeroed subcluster.
  write_patterns(dir / "l2.qcow2", "qcow2", 2, "128k");
  qemu_io("qcow2", dir / "l2.qcow2", {"write -P 0x33 135168 4096", "write -z 139264 4096"});
  expect_same_as_qemu(dir / "l2.qcow2", ImageFormat::qcow2, "qcow2");
  // An extended-L2 incremental over a plain full with subclusters left unallocated.
  run_ok("qemu-img create -q -f qcow2 " + shell_quote(dir / "base.qcow2") + " 8M");
  qemu_io("qcow2", dir / "base.qcow2", {"write -P 0x44 0 8M"});
  run_ok("cd " + shell_quote(dir.path()) +
         " && qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 inc.qcow2 8M");
  qemu_io("qcow2", dir / "inc.qcow2", {"write -P 0x45 4096 2048", "write -z 1M 2048"});
  expect_same_as_qemu(dir / "inc.qcow2", ImageFormat::qcow2, "qcow2");
}

TEST_F(NbdTest, VmdkAndVhdx) {
  TempDir dir;
  run_ok("qemu-img create -q -f qcow2 " + shell_quote(dir / "src.qcow2") + " 8M");
  write_patterns(dir / "src.qcow2", "qcow2", 3);
  for (const std::string sub : {"monolithicSparse", "twoGbMaxExtentSparse", "monolithicFlat", "streamOptimized"}) {
    const std::string out = dir / (sub + ".vmdk");
    run_ok("qemu-img convert -f qcow2 -O vmdk -o subformat=" + sub + " " + shell_quote(dir / "src.qcow2") + " " +
           shell_quote(out));
    expect_same_as_qemu(out, ImageFormat::vmdk, "qemu-nbd");
    const auto chain = read_image_chain(out, ImageFormat::vmdk, dir.path());
    ASSERT_EQ(chain.size(), 1u);
    if (sub == "twoGbMaxExtentSparse" || sub == "monolithicFlat") {
      EXPECT_EQ(chain[0].extents.size(), 1u);
    }
  }
  run_ok("qemu-img convert -f qcow2 -O vhdx " + shell_quote(dir / "src.qcow2") + " " + shell_quote(dir / "d.vhdx"));
  expect_same_as_qemu(dir / "d.vhdx", ImageFormat::vhdx, "qemu-nbd");
}

TEST_F(NbdTest, ChainsMixingFormats) {
  TempDir dir;
  run_ok("qemu-img create -q -f qcow2 " + shell_quote(dir / "src.qcow2") + " 8M");
  write_patterns(dir / "src.qcow2", "qcow2", 4);
  run_ok("qemu-img convert -f qcow2 -O vmdk " + shell_quote(dir / "src.qcow2") + " " + shell_quote(dir / "base.vmdk"));
  run_ok("qemu-img convert -f qcow2 -O raw " + shell_quote(dir / "src.qcow2") + " " + shell_quote(dir / "base.raw"));
  // A plain qcow2 over a VMDK base, a zstd qcow2 over a raw base.
  run_ok("cd " + shell_quote(dir.path()) + " && qemu-img create -q -f qcow2 -b base.vmdk -F vmdk over-vmdk.qcow2 8M");
  qemu_io("qcow2", dir / "over-vmdk.qcow2", {"write -P 0x71 1M 1M"});
  run_ok("cd " + shell_quote(dir.path()) +
         " && qemu-img create -q -f qcow2 -o compression_type=zstd -b base.raw -F raw over-raw.qcow2 8M");
  qemu_io("qcow2", dir / "over-raw.qcow2", {"write -c -P 0x72 0 64k"});
  expect_same_as_qemu(dir / "over-vmdk.qcow2", ImageFormat::qcow2, "qemu-nbd");
  expect_same_as_qemu(dir / "over-raw.qcow2", ImageFormat::qcow2, "qcow2");
  const auto chain = read_image_chain(dir / "over-vmdk.qcow2", ImageFormat::qcow2, dir.path());
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[1].format, ImageFormat::vmdk);
  // qemu is pinned to exactly these files and formats, the base with no backing.
  const std::string json = nbd::qemu_json_filename(chain);
  EXPECT_NE(json.find("\"driver\":\"vmdk\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"backing\":null"), std::string::npos) << json;
  EXPECT_NE(json.find(chain[1].path), std::string::npos) << json;
}

// File names are data inside qemu's json: options: quotes, backslashes,
// commas and spaces must reach qemu as the same file names.
TEST_F(NbdTest, OddFileNamesArePinnedExactly) {
  TempDir dir;
  const std::string folder = dir / "a \"folder\", with\\odd {names}";
  std::filesystem::create_directories(folder);
  // A VMDK base keeps the chain on qemu-nbd, whose json: filename must pin these names.
  const std::string base = folder + "/base, \"one\".vmdk";
  const std::string top = folder + "/top \\ two.qcow2";
  run_ok("qemu-img create -q -f vmdk " + shell_quote(base) + " 4M");
  qemu_io("vmdk", base, {"write -P 0x61 0 1M"});
  run_ok("cd " + shell_quote(folder) + " && qemu-img create -q -f qcow2 -o compression_type=zstd -b " +
         shell_quote("base, \"one\".vmdk") + " -F vmdk " + shell_quote("top \\ two.qcow2"));
  qemu_io("qcow2", top, {"write -c -P 0x62 64k 64k"});
  expect_same_as_qemu(top, ImageFormat::qcow2, "qemu-nbd");
}

// Both readers under 8 threads of random reads: our qcow2 reader (zstd
// clusters, shared cluster cache) and qemu-nbd (a VMDK, pooled connections).
TEST_F(NbdTest, ParallelReadsFromManyThreads) {
  TempDir dir;
  run_ok("qemu-img create -q -f qcow2 " + shell_quote(dir / "src.qcow2") + " 16M");
  qemu_io("qcow2", dir / "src.qcow2", {"write -P 0x11 0 4M", "write -P 0x12 5M 3M", "write -P 0x13 12M 4M"});
  run_ok("qemu-img convert -c -f qcow2 -O qcow2 -o compression_type=zstd " + shell_quote(dir / "src.qcow2") + " " +
         shell_quote(dir / "z.qcow2"));
  // Distinct bytes everywhere so a misplaced read shows.
  qemu_io("qcow2", dir / "z.qcow2", {"write -P 0x21 6M 64k", "write -P 0x22 7M 4k"});
  run_ok("qemu-img convert -f qcow2 -O vmdk -o subformat=streamOptimized " + shell_quote(dir / "z.qcow2") + " " +
         shell_quote(dir / "z.vmdk"));
  for (const auto& [name, format, reader] : std::vector<std::tuple<std::string, ImageFormat, std::string>>{
           {"z.qcow2", ImageFormat::qcow2, "qcow2"}, {"z.vmdk", ImageFormat::vmdk, "qemu-nbd"}}) {
    SCOPED_TRACE(name);
    TempDir ref_dir;
    const std::string want = reference_of(dir / name, to_string(format), ref_dir);
    BlockDevicePtr dev = open_image(dir / name, format, dir.path(), open_nbd_image);
    ASSERT_EQ(dev->reader(), reader);
    std::atomic<int> mismatches{0}, errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(static_cast<uint64_t>(t) * 7919 + 1);
        for (int i = 0; i < 200; ++i) {
          const uint64_t len = 1 + rng() % (256 * 1024);
          const uint64_t off = rng() % (want.size() - len);
          try {
            if (read_range(*dev, off, static_cast<size_t>(len)) != want.substr(off, len)) ++mismatches;
          } catch (const std::exception&) {
            ++errors;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(mismatches.load(), 0);
    EXPECT_EQ(errors.load(), 0);
  }
}

// Everything our validation refuses is refused before qemu-nbd starts.
TEST_F(NbdTest, RefusalsStartNoQemuNbd) {
  TempDir outside;
  TempDir repo;
  const std::string r = repo.path();
  auto refused = [&](const std::string& image, ImageFormat format, int code, const std::vector<std::string>& names) {
    SCOPED_TRACE(image);
    expect_error([&] { open_image(image, format, r, open_nbd_image); }, code, names);
    EXPECT_EQ(our_servers(), "");
    EXPECT_TRUE(our_folders().empty());
  };
  // External data file (zstd so that the qemu path would otherwise be taken).
  run_ok("qemu-img create -q -f qcow2 -o compression_type=zstd,data_file=" + shell_quote(repo / "data.raw") + " " +
         shell_quote(repo / "data.qcow2") + " 1M");
  refused(repo / "data.qcow2", ImageFormat::qcow2, EOPNOTSUPP, {repo / "data.qcow2", "external data file"});
  // A json: backing name.
  run_ok("qemu-img create -q -f qcow2 " + shell_quote(repo / "base.qcow2") + " 1M");
  run_ok("qemu-img create -q -f qcow2 -o compression_type=zstd " + shell_quote(repo / "json.qcow2") + " 1M");
  const std::string json = "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"" +
                           (repo / "base.qcow2") + "\"}}";
  run_ok("qemu-img rebase -u -b " + shell_quote(json) + " -F qcow2 " + shell_quote(repo / "json.qcow2"));
  refused(repo / "json.qcow2", ImageFormat::qcow2, EOPNOTSUPP, {repo / "json.qcow2", "json:"});
  // A backing file outside the repository, by ".." and by absolute name.
  run_ok("qemu-img create -q -f qcow2 " + shell_quote(outside / "base.qcow2") + " 1M");
  const std::string rel = std::filesystem::relative(outside / "base.qcow2", r).string();
  run_ok("cd " + shell_quote(r) + " && qemu-img create -q -u -f qcow2 -o compression_type=zstd -b " +
         shell_quote(rel) + " -F qcow2 escape.qcow2 1M");
  refused(repo / "escape.qcow2", ImageFormat::qcow2, EACCES, {repo / "escape.qcow2", "outside the repository"});
  // A raw backing file whose format the header does not declare: never guessed.
  write_file(repo / "plain.raw", std::string(1 << 20, 'x'));
  run_ok("cd " + shell_quote(r) +
         " && qemu-img create -q -f qcow2 -o compression_type=zstd -b plain.raw -F raw undeclared.qcow2 1M");
  test::hide_qcow2_backing_format(repo / "undeclared.qcow2");
  refused(repo / "undeclared.qcow2", ImageFormat::qcow2, EOPNOTSUPP, {repo / "undeclared.qcow2", "never guessed"});
  // VMDK descriptors naming extents outside the folder.
  run_ok("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse " + shell_quote(outside / "o.vmdk") + " 1M");
  run_ok("qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse " + shell_quote(repo / "v.vmdk") + " 1M");
  const std::string descriptor = read_file(repo / "v.vmdk");
  ASSERT_NE(descriptor.find("\"v-s001.vmdk\""), std::string::npos) << descriptor;
  auto with_extent = [&](const std::string& name, const std::string& file) {
    std::string d = descriptor;
    d.replace(d.find("\"v-s001.vmdk\""), 13, "\"" + name + "\"");
    write_file(file, d);
  };
  const std::string out_rel = std::filesystem::relative(outside / "o-s001.vmdk", r).string();
  with_extent(out_rel, repo / "dotdot.vmdk");
  refused(repo / "dotdot.vmdk", ImageFormat::vmdk, EOPNOTSUPP, {repo / "dotdot.vmdk", "'..' component"});
  with_extent(outside / "o-s001.vmdk", repo / "abs.vmdk");
  refused(repo / "abs.vmdk", ImageFormat::vmdk, EOPNOTSUPP, {repo / "abs.vmdk", "absolute"});
  std::filesystem::create_symlink(outside / "o-s001.vmdk", repo / "link-s001.vmdk");
  with_extent("link-s001.vmdk", repo / "link.vmdk");
  refused(repo / "link.vmdk", ImageFormat::vmdk, EACCES, {repo / "link.vmdk", "outside the repository"});
  with_extent("json:{}", repo / "proto.vmdk");
  refused(repo / "proto.vmdk", ImageFormat::vmdk, EOPNOTSUPP, {repo / "proto.vmdk", "protocol"});
  // A VMDK delta disk (its parent would be opened by qemu): refused.
  std::string delta = descriptor;
  delta.insert(delta.find("createType"), "parentFileNameHint=\"" + (outside / "o.vmdk") + "\"\n");
  write_file(repo / "delta.vmdk", delta);
  refused(repo / "delta.vmdk", ImageFormat::vmdk, EOPNOTSUPP, {repo / "delta.vmdk", "delta"});
  // Not what the catalog says it is.
  refused(repo / "plain.raw", ImageFormat::vhdx, EIO, {repo / "plain.raw", "not a VHDX"});
  refused(repo / "plain.raw", ImageFormat::vmdk, EIO, {repo / "plain.raw", "not a VMDK"});
  // The valid one, for contrast, opens.
  EXPECT_EQ(open_image(repo / "v.vmdk", ImageFormat::vmdk, r, open_nbd_image)->size(), 1u << 20);
}

// Descriptors whose extents qemu reads but a line-by-line reading of the
// descriptor would not see: qemu's sscanf crosses lines and takes any
// whitespace, reads up to 1 MiB from an embedded descriptor's start
// whatever its declared size, and opens the descriptor embedded in a
// SPARSE extent of capacity 0. Each image is first shown to make qemu
// itself read a file outside the repository; ours must refuse it before
// any qemu-nbd starts.
TEST_F(NbdTest, VmdkExtentsHiddenFromALineReadingAreRefused) {
  TempDir outside;
  TempDir repo;
  const std::string r = repo.path();
  const std::string secret = "host file outside the repository";
  write_file(outside / "secret.raw", secret + std::string(4096 - secret.size(), '\0'));
  const std::string abs = outside / "secret.raw";
  const std::string head = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n";
  auto qemu_reads_secret = [&](const std::string& image) {
    const auto out = run("qemu-io -r -f vmdk -c 'read -P 0x68 0 1' " + shell_quote(image) + " 2>&1");
    return out.status == 0 && out.output.find("read 1/1 bytes") != std::string::npos &&
           out.output.find("failed") == std::string::npos;
  };
  auto refused = [&](const std::string& image, const std::vector<std::string>& names) {
    SCOPED_TRACE(image);
    ASSERT_TRUE(qemu_reads_secret(image)) << "the crafted image no longer makes qemu read the outside file";
    expect_error([&] { open_image(image, ImageFormat::vmdk, r, open_nbd_image); }, EOPNOTSUPP, names);
    EXPECT_EQ(our_servers(), "");
  };
  // One extent over four lines.
  write_file(repo / "lines.vmdk", head + "createType=\"monolithicFlat\"\nRW\n8\nFLAT\n\"" + abs + "\" 0\n");
  refused(repo / "lines.vmdk", {"absolute"});
  // Vertical tab and form feed as separators.
  write_file(repo / "vt.vmdk", head + "createType=\"monolithicFlat\"\n\fRW\v8 FLAT \"" + abs + "\" 0\n");
  refused(repo / "vt.vmdk", {"absolute"});

  // A monolithic sparse VMDK turned into a descriptor holder (capacity 0).
  run_ok("qemu-img create -q -f vmdk " + shell_quote(repo / "s.vmdk") + " 1M");
  const std::string sparse = read_file(repo / "s.vmdk");
  auto le64_at = [&](size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(sparse[at + static_cast<size_t>(i)]);
    return v;
  };
  const uint64_t desc_at = le64_at(28) * 512;
  const uint64_t desc_len = le64_at(36) * 512;
  ASSERT_GE(desc_len, 1024u);
  auto holder = [&](const std::string& descriptor) {
    std::string img = sparse;
    for (int i = 0; i < 8; ++i) img[12 + static_cast<size_t>(i)] = '\0';  // capacity 0
    std::string d = descriptor;
    d.resize(static_cast<size_t>(desc_len), '\0');
    img.replace(static_cast<size_t>(desc_at), d.size(), d);
    return img;
  };
  // The embedded descriptor fills its one declared sector without a NUL
  // and goes on in the next one.
  {
    std::string d = head + "createType=\"monolithicFlat\"\n";
    d += std::string(511 - d.size(), '#') + "\n";
    d += "RW 8 FLAT \"" + abs + "\" 0\n";
    std::string img = holder(d);
    img[36] = 1;  // descriptor size: one sector
    for (int i = 1; i < 8; ++i) img[36 + static_cast<size_t>(i)] = '\0';
    write_file(repo / "long-desc.vmdk", img);
    refused(repo / "long-desc.vmdk", {"absolute"});
  }
  // A SPARSE extent of capacity 0 whose own embedded descriptor names the file.
  write_file(repo / "inner.vmdk", holder(head + "createType=\"monolithicFlat\"\nRW 8 FLAT \"" + abs + "\" 0\n"));
  write_file(repo / "nested.vmdk", head + "createType=\"twoGbMaxExtentSparse\"\nRW 2048 SPARSE \"inner.vmdk\"\n");
  refused(repo / "nested.vmdk", {"inner.vmdk", "capacity 0"});
}

// A damaged image qemu itself refuses: qemu-nbd exits, we say why, nothing is left.
TEST_F(NbdTest, QemuRefusalIsAClearError) {
  TempDir dir;
  run_ok("qemu-img create -q -f vhdx " + shell_quote(dir / "d.vhdx") + " 8M");
  // Keep the signature, wipe both headers and the region tables.
  std::fstream f(dir / "d.vhdx", std::ios::in | std::ios::out | std::ios::binary);
  const std::string zeros(256 * 1024, '\0');
  f.seekp(64 * 1024);
  f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  f.close();
  expect_error([&] { open_image(dir / "d.vhdx", ImageFormat::vhdx, dir.path(), open_nbd_image); }, EIO,
               {dir / "d.vhdx", "qemu-nbd exited"});
}

// Guest-controlled bytes qemu rejects: an EIO for that read, the device keeps working.
TEST_F(NbdTest, DamagedCompressedClusterGivesEioAndTheImageStaysUsable) {
  TempDir dir;
  const std::string img = dir / "z.qcow2";
  run_ok("qemu-img create -q -f qcow2 -o compression_type=zstd " + shell_quote(img) + " 4M");
  write_file(dir / "text", [] {
    std::string t;
    while (t.size() < 65536) t += "compressible text ";
    return t.substr(0, 65536);
  }());
  qemu_io("qcow2", img, {"write -c -s " + (dir / "text") + " 0 64k", "write -P 0x42 1M 64k"});
  // Overwrite the start of the zstd frame (its magic 28 b5 2f fd) of the compressed cluster.
  {
    const std::string data = read_file(img);
    const auto at = data.find("\x28\xb5\x2f\xfd");
    ASSERT_NE(at, std::string::npos) << "no zstd frame in the image";
    std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(at));
    const std::string junk(24, '\xff');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  BlockDevicePtr dev = open_image(img, ImageFormat::qcow2, dir.path());
  expect_error([&] { read_range(*dev, 0, 4096); }, EIO, {img, "zstd", "virtual offset 0"});
  EXPECT_EQ(read_range(*dev, 1 << 20, 4), "BBBB");
  expect_error([&] { read_range(*dev, 0, 4096); }, EIO, {img});
}

// A hostile VMDK descriptor is refused by our checks, before qemu sees it.
TEST_F(NbdTest, DamagedVmdkHeadersAreRefused) {
  TempDir dir;
  auto refused = [&](const std::string& image, int code, const std::vector<std::string>& names) {
    SCOPED_TRACE(image);
    expect_error([&] { open_image(image, ImageFormat::vmdk, dir.path(), open_nbd_image); }, code, names);
  };
  run_ok("qemu-img create -q -f vmdk " + shell_quote(dir / "s.vmdk") + " 1M");
  // Embedded descriptor (header bytes 28..43: sector and size) past the end of the file.
  const std::string good = read_file(dir / "s.vmdk");
  std::string bad = good;
  for (int i = 0; i < 8; ++i) bad[28 + i] = static_cast<char>(i == 3 ? 0x7f : 0);
  write_file(dir / "desc-out.vmdk", bad);
  refused(dir / "desc-out.vmdk", EIO, {"embedded descriptor"});
  // A text descriptor listing more extents than allowed.
  std::string many = "# Disk DescriptorFile\nversion=1\ncreateType=\"twoGbMaxExtentSparse\"\n";
  for (int i = 0; i < 1100; ++i) many += "RW 16 ZERO\n";
  write_file(dir / "many.vmdk", many);
  refused(dir / "many.vmdk", EIO, {"more than 1024 extents"});
  // Neither a sparse header nor a descriptor.
  write_file(dir / "junk.vmdk", std::string(4096, 'x'));
  refused(dir / "junk.vmdk", EIO, {"not a VMDK"});
  write_file(dir / "cowd.vmdk", "COWD" + std::string(4092, '\0'));
  refused(dir / "cowd.vmdk", EOPNOTSUPP, {"VMDK3"});
  EXPECT_EQ(our_servers(), "");
}

// A VHDX differencing disk (qemu-img cannot make one: the "has parent" bit
// of a plain VHDX's file parameters is set by hand, as Hyper-V would have it).
TEST_F(NbdTest, VhdxDifferencingDiskIsRefused) {
  TempDir dir;
  const std::string img = dir / "diff.vhdx";
  run_ok("qemu-img create -q -f vhdx " + shell_quote(img) + " 8M");
  std::string data = read_file(img);
  auto le32 = [&](size_t at) {
    return uint32_t{static_cast<unsigned char>(data.at(at))} | uint32_t{static_cast<unsigned char>(data.at(at + 1))} << 8 |
           uint32_t{static_cast<unsigned char>(data.at(at + 2))} << 16 |
           uint32_t{static_cast<unsigned char>(data.at(at + 3))} << 24;
  };
  const size_t table = data.find("metadata", 0x40000);  // past both region tables
  ASSERT_NE(table, std::string::npos);
  const std::string file_params("\x37\x67\xA1\xCA\x36\xFA\x43\x4D\xB3\xB6\x33\xF0\xAA\x44\xE7\x6B", 16);
  bool patched = false;
  for (size_t e = table + 32; e < table + 32 + 32 * 16; e += 32) {
    if (data.compare(e, 16, file_params) != 0) continue;
    data[table + le32(e + 16) + 4] |= 2;  // data_bits: HasParent
    patched = true;
  }
  ASSERT_TRUE(patched);
  write_file(img, data);
  expect_error([&] { open_image(img, ImageFormat::vhdx, dir.path(), open_nbd_image); }, EOPNOTSUPP, {img, "differencing"});
  EXPECT_EQ(our_servers(), "");
}

TEST_F(NbdTest, ServerKilledUnderUsGivesEio) {
  TempDir dir;
  run_ok("qemu-img create -q -f vmdk " + shell_quote(dir / "z.vmdk") + " 4M");
  qemu_io("vmdk", dir / "z.vmdk", {"write -P 0x41 0 1M"});
  BlockDevicePtr dev = open_image(dir / "z.vmdk", ImageFormat::vmdk, dir.path(), open_nbd_image);
  EXPECT_EQ(read_range(*dev, 0, 4), "AAAA");
  ASSERT_NE(our_servers(), "");
  run_ok("pkill -KILL -f -- " + shell_quote("[q]emu-nbd-" + std::to_string(::getpid()) + "-"));
  // Every later read fails cleanly (the pooled connection and a new one alike).
  for (int i = 0; i < 3; ++i)
    expect_error([&] { read_range(*dev, 4096, 4096); }, EIO, {dir / "z.vmdk", "qemu-nbd"});
  dev.reset();  // reaps the dead server and removes the folder (TearDown checks)
}

// A qemu-nbd that stops answering (stopped here; hung storage in real life)
// must not hold a reading thread forever: the read fails with EIO once the
// request timeout passes, and reads work again when the server answers.
TEST_F(NbdTest, ServerThatStopsAnsweringGivesEioNotAHang) {
  TempDir dir;
  run_ok("qemu-img create -q -f vmdk " + shell_quote(dir / "z.vmdk") + " 4M");
  qemu_io("vmdk", dir / "z.vmdk", {"write -P 0x41 0 1M"});
  BlockDevicePtr dev = open_image(dir / "z.vmdk", ImageFormat::vmdk, dir.path(), open_nbd_image);
  EXPECT_EQ(read_range(*dev, 0, 4), "AAAA");
  const std::string server = shell_quote("[q]emu-nbd-" + std::to_string(::getpid()) + "-");
  ASSERT_NE(our_servers(), "");
  const auto saved = nbd::request_timeout();
  nbd::set_request_timeout(std::chrono::seconds(2));
  run_ok("pkill -STOP -f -- " + server);
  // The pooled connection (a read) and new ones (a connect) alike; more
  // reads than connections, from several threads at once.
  std::vector<std::thread> readers;
  std::atomic<int> eio{0};
  for (size_t i = 0; i < nbd::kConnections + 2; ++i)
    readers.emplace_back([&] {
      try {
        read_range(*dev, 8192, 4096);
      } catch (const Error& e) {
        if (e.code() == EIO && std::string(e.what()).find("did not answer") != std::string::npos) ++eio;
      }
    });
  for (auto& t : readers) t.join();
  EXPECT_EQ(eio.load(), static_cast<int>(nbd::kConnections + 2));
  run_ok("pkill -CONT -f -- " + server);
  nbd::set_request_timeout(saved);
  EXPECT_EQ(read_range(*dev, 4096, 4), "AAAA");
  dev.reset();
}

TEST_F(NbdTest, ServerEndsWithTheDevice) {
  TempDir dir;
  run_ok("qemu-img create -q -f vhdx " + shell_quote(dir / "d.vhdx") + " 4M");
  BlockDevicePtr dev = open_image(dir / "d.vhdx", ImageFormat::vhdx, dir.path(), open_nbd_image);
  ASSERT_NE(our_servers(), "");
  ASSERT_EQ(our_folders().size(), 1u);
  const std::string folder = our_folders()[0];
  EXPECT_EQ(std::filesystem::status(folder).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_all);
  // Opened read-only: the image is unchanged by serving it.
  const std::string before = test::sha256_of(dir / "d.vhdx");
  EXPECT_EQ(read_range(*dev, 0, 512), std::string(512, '\0'));
  dev.reset();
  EXPECT_EQ(our_servers(), "");
  EXPECT_FALSE(std::filesystem::exists(folder));
  EXPECT_EQ(test::sha256_of(dir / "d.vhdx"), before);
}

}  // namespace
}  // namespace sendense
