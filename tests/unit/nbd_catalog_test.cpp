// The catalog side of images read through qemu-nbd: formats chosen by name
// (.vmdk, .vhdx), import of such images and of zstd / mixed-format chains,
// and the image_reader column of restore_mounts (migration 4).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

namespace fs = std::filesystem;
using test::run_ok;
using test::shell_quote;
using test::TempDir;

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

TEST(NbdCatalog, FormatsByName) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  run_ok("qemu-img create -q -f vmdk " + shell_quote(dir / "a.VMDK") + " 1M");
  run_ok("qemu-img create -q -f vhdx " + shell_quote(dir / "b.vhdx") + " 1M");
  EXPECT_EQ(choose_format(dir / "a.VMDK").format, "vmdk");
  EXPECT_EQ(choose_format(dir / "b.vhdx").format, "vhdx");
  EXPECT_EQ(choose_format(dir / "b.vhdx", "vmdk").format, "vmdk");  // --format wins over the name
  EXPECT_THROW(choose_format(dir / "b.vhdx", "vdi"), Error);
  // The content is checked where it is read: a .vhdx that is not one is refused.
  run_ok("qemu-img create -q -f vmdk " + shell_quote(dir / "c.vhdx") + " 1M");
  try {
    describe_image(dir / "c.vhdx");
    ADD_FAILURE() << "a VMDK named .vhdx was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a VHDX"), std::string::npos) << e.what();
  }
}

TEST(NbdCatalog, ImportsQemuOnlyImagesAndChains) {
  SENDENSE_REQUIRE_TOOL("qemu-img");
  TempDir dir;
  const std::string repo = dir / "repo";
  fs::create_directories(repo);
  const std::string in_repo = "cd " + shell_quote(repo) + " && ";
  run_ok(in_repo + "qemu-img create -q -f qcow2 backup-vm-20260101000000.qcow2 16M");
  run_ok(in_repo + "qemu-img create -q -f qcow2 -o compression_type=zstd -b backup-vm-20260101000000.qcow2 "
                   "-F qcow2 backup-vm-20260102000000.qcow2 16M");
  run_ok(in_repo + "qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse win.vmdk 16M");
  run_ok(in_repo + "qemu-img create -q -f vhdx hv.vhdx 16M");
  run_ok(in_repo + "qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 16M");
  run_ok(in_repo + "qemu-img create -q -f qcow2 -b win.vmdk -F vmdk over-vmdk.qcow2 16M");
  Catalog c(dir / "catalog.db");
  ImportReport r = import_repository(c, repo);
  EXPECT_TRUE(r.errors.empty()) << joined(r.errors);
  // The extent file win-s001.vmdk belongs to win.vmdk: not a backup of its own.
  EXPECT_FALSE(contains(r.added, "win-s001")) << joined(r.added);
  EXPECT_FALSE(c.find_backup("win-s001"));
  EXPECT_FALSE(c.find_backup("flat-flat"));  // a raw extent: neither a backup nor an error
  EXPECT_EQ(c.find_backup("flat")->format, "vmdk");
  for (const std::string id : {"backup-vm-20260101000000", "backup-vm-20260102000000", "win", "hv", "over-vmdk"})
    EXPECT_TRUE(contains(r.added, id)) << id << "\n" << joined(r.added);
  EXPECT_EQ(c.find_backup("backup-vm-20260102000000")->parent_id, "backup-vm-20260101000000");
  EXPECT_EQ(c.find_backup("backup-vm-20260102000000")->kind, "incremental");
  EXPECT_EQ(c.find_backup("win")->format, "vmdk");
  EXPECT_EQ(c.find_backup("hv")->format, "vhdx");
  EXPECT_EQ(c.find_backup("over-vmdk")->parent_id, "win");
}

TEST(NbdCatalog, MountRowRecordsTheImageReader) {
  TempDir dir;
  Catalog c(dir / "catalog.db");
  BackupRecord b;
  b.id = "b1";
  b.vm = "vm1";
  b.image_path = "/repo/b1.vmdk";
  b.format = "vmdk";
  b.created_at = 1767268800;
  c.upsert_backup(b);
  const std::string id = c.begin_mount("b1", "/mnt", "userspace", 60);
  EXPECT_EQ(c.list_mounts().at(0).image_reader, "");
  c.set_mount_image_reader(id, "qemu-nbd");
  EXPECT_EQ(c.list_mounts().at(0).image_reader, "qemu-nbd");
  c.set_mount_status(id, "mounted", "ext4");
  EXPECT_EQ(c.list_mounts().at(0).image_reader, "qemu-nbd");
  EXPECT_GE(Catalog::latest_schema_version(), 4);
}

}  // namespace
}  // namespace sendense
