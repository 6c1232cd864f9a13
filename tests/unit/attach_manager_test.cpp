// The attach lifecycle without a mount: AttachManager over a real catalog
// and real images (mkfs.ext4 -d, made at test time), opened by the engine.
// A held AttachedBackupPtr is what a request in flight holds.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "catalog/catalog.h"
#include "fuse/attach_manager.h"
#include "fuse/catalog_view.h"
#include "readers/common/error.h"
#include "tests/support/test_support.h"

namespace sendense {
namespace {

using namespace std::chrono_literals;
using test::run_ok;
using test::shell_quote;
using test::TempDir;

int code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return 0;
}

class AttachManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    run_ok("mkdir -p " + shell_quote(dir_ / "src") + " && echo hello >" + shell_quote(dir_ / "src/hello.txt"));
    catalog_ = std::make_unique<Catalog>(dir_ / "catalog.db");
    for (const char* id : {"b1", "b2"}) add(id, make_ext4(id));
    view_ = std::make_unique<CatalogView>(*catalog_);
    view_->refresh();
  }

  std::string make_ext4(const std::string& name) {
    const std::string img = dir_ / (name + ".raw");
    run_ok("mkfs.ext4 -q -F -d " + shell_quote(dir_ / "src") + " " + shell_quote(img) + " 8M");
    return img;
  }

  void add(const std::string& id, const std::string& image, const std::string& format = "raw") {
    BackupRecord b;
    b.id = id;
    b.vm = "vm-" + id;
    b.image_path = image;
    b.format = format;
    b.kind = "full";
    b.created_at = 1800000000;
    catalog_->upsert_backup(b);
  }

  std::unique_ptr<AttachManager> manager(AttachOptions o) {
    o.attach_mode = "userspace";
    o.mount_path = dir_ / "mnt";
    return std::make_unique<AttachManager>(*catalog_, *view_, o);
  }

  std::vector<MountRecord> rows_of(const std::string& backup) {
    std::vector<MountRecord> out;
    for (auto& m : catalog_->list_mounts())
      if (m.backup_id == backup) out.push_back(m);
    return out;
  }

  TempDir dir_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<CatalogView> view_;
};

TEST_F(AttachManagerTest, AttachRecordsItsRowAndVolumesAndDetachEndsThem) {
  auto m = manager({});
  AttachedBackupPtr b = m->acquire("b1");
  ASSERT_EQ(b->volumes.size(), 1u);
  EXPECT_EQ(b->volumes[0].name, "disk");
  EXPECT_EQ(b->volumes[0].fs_type, "ext4");
  EXPECT_EQ(b->volumes[0].backend, "userspace");
  EXPECT_EQ(m->acquire("b1"), b) << "a second access attached again";
  auto rows = rows_of("b1");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, "mounted");
  EXPECT_EQ(rows[0].id, b->mount_id);
  EXPECT_EQ(rows[0].image_reader, "raw");
  ASSERT_EQ(catalog_->volumes_of("b1").size(), 1u);
  EXPECT_EQ(code_of([&] { m->acquire("nope"); }), ENOENT);

  m->detach("b1", "test");
  EXPECT_TRUE(b->detached);
  EXPECT_FALSE(m->find("b1"));
  EXPECT_TRUE(rows_of("b1").empty());
  // Re-attached: a new attach, the same permanent volume id.
  AttachedBackupPtr again = m->acquire("b1");
  EXPECT_NE(again, b);
  EXPECT_EQ(again->volumes[0].id, b->volumes[0].id);
}

TEST_F(AttachManagerTest, MaxMountsEvictsTheIdleOneAndIsBusyWhenEveryOneIsInUse) {
  AttachOptions o;
  o.max_mounts = 1;
  o.attach_wait = 1s;
  auto m = manager(o);
  AttachedBackupPtr held = m->acquire("b1");  // a request in flight on b1
  EXPECT_EQ(code_of([&] { m->acquire("b2"); }), EBUSY);
  EXPECT_FALSE(held->detached);
  held.reset();  // b1 idle now
  AttachedBackupPtr b2 = m->acquire("b2");
  EXPECT_FALSE(m->find("b1")) << "the idle backup was not evicted";
  EXPECT_EQ(m->attached_count(), 1u);
  EXPECT_TRUE(rows_of("b1").empty());
  EXPECT_EQ(rows_of("b2").size(), 1u);
}

TEST_F(AttachManagerTest, FailedAttachIsRetriedOnlyAfterTheBackoff) {
  // Not a qcow2 image at all: opening the image fails.
  const std::string broken = dir_ / "b3.qcow2";
  run_ok("head -c 65536 /dev/urandom >" + shell_quote(broken));
  add("b3", broken, "qcow2");
  view_->refresh();
  AttachOptions o;
  o.failure_backoff = 2s;
  auto m = manager(o);
  const int first = code_of([&] { m->acquire("b3"); });
  EXPECT_EQ(first, EIO);
  auto rows = rows_of("b3");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, "failed");
  const std::string failed_row = rows[0].id;
  // Within the backoff: the same error, no new attempt (the same row).
  EXPECT_EQ(code_of([&] { m->acquire("b3"); }), EIO);
  rows = rows_of("b3");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id, failed_row) << "retried within the backoff";
  // Repaired in the repository: the next access after the backoff attaches.
  run_ok("qemu-img convert -O qcow2 " + shell_quote(make_ext4("b3-good")) + " " + shell_quote(broken));
  std::this_thread::sleep_for(2100ms);
  AttachedBackupPtr ok = m->acquire("b3");
  ASSERT_EQ(ok->volumes.size(), 1u);
  rows = rows_of("b3");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NE(rows[0].id, failed_row);
  EXPECT_EQ(rows[0].status, "mounted");
}

TEST_F(AttachManagerTest, IdleTimeoutAndDetachRequests) {
  AttachOptions o;
  o.idle_timeout = 1s;
  auto m = manager(o);
  {
    AttachedBackupPtr held = m->acquire("b1");
    std::this_thread::sleep_for(1100ms);
    m->detach_idle();
    EXPECT_TRUE(m->find("b1")) << "detached while a request was in flight";
  }
  std::this_thread::sleep_for(1100ms);
  m->detach_idle();
  EXPECT_FALSE(m->find("b1")) << "not detached after the idle timeout";

  o.idle_timeout = 3600s;
  auto m2 = manager(o);
  m2->acquire("b2");
  catalog_->request_detach("b2");
  catalog_->request_detach("b1");  // not attached: forgotten
  m2->detach_requested();
  EXPECT_FALSE(m2->find("b2"));
  EXPECT_TRUE(catalog_->take_detach_requests().empty());
}

}  // namespace
}  // namespace sendense
