// The catalog side of the kernel backend (migration 5): kernel_devices rows,
// whose UNIQUE device means two daemons (two Catalog objects on one
// database) or a dead run never hold one device at once, and the per-volume
// backend column; plus parsing --nbd-devices.
#include <gtest/gtest.h>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "readers/kernel/nbd_device.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using test::TempDir;

TEST(KernelCatalog, ADeviceIsHeldByOneRowOnly) {
  TempDir dir;
  Catalog a(dir / "c.db");
  Catalog b(dir / "c.db");
  EXPECT_TRUE(a.claim_kernel_device({"/dev/nbd0", "nbd", "backup-a", "mount-a", 100, 0}));
  EXPECT_FALSE(b.claim_kernel_device({"/dev/nbd0", "nbd", "backup-b", "mount-b", 200, 0}));
  EXPECT_TRUE(b.claim_kernel_device({"/dev/nbd1", "nbd", "backup-b", "mount-b", 200, 0}));
  a.set_kernel_device_helper("/dev/nbd0", 4242);
  auto rows = b.kernel_devices();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].device, "/dev/nbd0");
  EXPECT_EQ(rows[0].backup_id, "backup-a");
  EXPECT_EQ(rows[0].owner_pid, 100);
  EXPECT_EQ(rows[0].helper_pid, 4242);
  a.release_kernel_device("/dev/nbd0");
  EXPECT_TRUE(b.claim_kernel_device({"/dev/nbd0", "nbd", "backup-b", "mount-b", 200, 0}));
  EXPECT_THROW(a.claim_kernel_device({"/dev/nbd5", "floppy", "x", "y", 1, 0}), Error);  // kind is checked
}

TEST(KernelCatalog, NbdDeviceRanges) {
  EXPECT_EQ(kernel::parse_nbd_range("0-7").first, 0);
  EXPECT_EQ(kernel::parse_nbd_range("0-7").last, 7);
  EXPECT_EQ(kernel::parse_nbd_range("3").last, 3);
  for (const char* bad : {"", "-", "7-0", "a-b", "1-2x", "-1-3", "0-99999"})
    EXPECT_THROW(kernel::parse_nbd_range(bad), Error) << bad;
}

}  // namespace
}  // namespace sendense
