// The daemon's configuration: file format, checks with the file and line in
// the message, and command-line values overriding the file.
#include <gtest/gtest.h>

#include <functional>

#include "tests/support/test_support.h"
#include "tools/daemon/config.h"

namespace sendense::test {
namespace {

using config::ConfigError;
using config::DaemonConfig;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ConfigTest, DefaultsMatchTheDocumentedOnes) {
  DaemonOptions o = DaemonConfig().options();
  EXPECT_EQ(o.catalog_path, "/var/lib/sendense-restore/catalog.db");
  EXPECT_EQ(o.idle_timeout.count(), 3600);
  EXPECT_EQ(o.max_mounts, 8u);
  EXPECT_EQ(o.attach_mode, "auto");
  EXPECT_TRUE(o.fs_open.replay_journal);
  EXPECT_EQ(o.fs_open.ntfs_dir_mode, 0755u);
  EXPECT_EQ(o.fs_open.ntfs_file_mode, 0644u);
  EXPECT_EQ(o.metrics_listen, "");
  EXPECT_EQ(o.mountpoint, "");
  EXPECT_EQ(o.isolation, "worker");
  EXPECT_EQ(o.worker_timeout.count(), 30);
  EXPECT_EQ(o.worker_memory_mib, 1024u);
  EXPECT_EQ(o.fs_open.cache_budget_bytes, 64u << 20);
}

TEST(ConfigTest, FileSetsEveryKeyAndCommentsAndBlanksAreIgnored) {
  TempDir tmp;
  write_file(tmp / "a.conf",
             "# comment\n\n"
             "mountpoint = /mnt/x\n"
             "catalog=/srv/c.db\n"
             "  idle-timeout   =  600  \n"
             "max-mounts = 3\n"
             "attach = userspace\n"
             "nbd-devices = 0-7\n"
             "no-replay = yes\n"
             "fuse-options = uid=5,gid=6\n"
             "log-level = debug\n"
             "ntfs-uid = 1000\n"
             "ntfs-gid = 100\n"
             "ntfs-dir-mode = 750\n"
             "ntfs-file-mode = 640\n"
             "metrics-listen = 127.0.0.1:9469\n"
             "isolation = worker\n"
             "worker-timeout = 5\n"
             "worker-memory = 2048\n"
             "cache-budget = 16\n");
  DaemonConfig c;
  c.load_file(tmp / "a.conf");
  DaemonOptions o = c.options();
  EXPECT_EQ(o.mountpoint, "/mnt/x");
  EXPECT_EQ(o.catalog_path, "/srv/c.db");
  EXPECT_EQ(o.idle_timeout.count(), 600);
  EXPECT_EQ(o.max_mounts, 3u);
  EXPECT_EQ(o.attach_mode, "userspace");
  EXPECT_EQ(o.nbd_devices, "0-7");
  EXPECT_FALSE(o.fs_open.replay_journal);
  EXPECT_EQ(o.fuse_options, (std::vector<std::string>{"uid=5", "gid=6"}));
  EXPECT_EQ(c.log_level(), "debug");
  EXPECT_EQ(o.fs_open.ntfs_uid, 1000u);
  EXPECT_EQ(o.fs_open.ntfs_gid, 100u);
  EXPECT_EQ(o.fs_open.ntfs_dir_mode, 0750u);
  EXPECT_EQ(o.fs_open.ntfs_file_mode, 0640u);
  EXPECT_EQ(o.metrics_listen, "127.0.0.1:9469");
  EXPECT_EQ(o.isolation, "worker");
  EXPECT_EQ(o.worker_timeout.count(), 5);
  EXPECT_EQ(o.worker_memory_mib, 2048u);
  EXPECT_EQ(o.fs_open.cache_budget_bytes, 16u << 20);
  for (const auto& [key, setting] : c.effective())
    EXPECT_TRUE(setting.origin.starts_with(tmp / "a.conf:")) << key << " from " << setting.origin;
}

TEST(ConfigTest, BadValuesNameTheFileAndLine) {
  TempDir tmp;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"idle-timeout = soon\n", ":1: idle-timeout needs a number from 1 to"},
      {"\n\nmax-mounts = 0\n", ":3: max-mounts needs a number from 1 to 4096, got '0'"},
      {"attach = sometimes\n", ":1: attach needs one of userspace, kernel, auto, got 'sometimes'"},
      {"# x\nno-replay = maybe\n", ":2: no-replay needs yes or no, got 'maybe'"},
      {"ntfs-dir-mode = 999\n", ":1: ntfs-dir-mode needs an octal number"},
      {"metrics-listen = localhost:80\n", ":1: metrics-listen needs ADDRESS:PORT"},
      {"metrics-listen = 127.0.0.1:70000\n", ":1: metrics-listen needs ADDRESS:PORT"},
      {"mountpoint = relative/dir\n", ":1: mountpoint needs an absolute path"},
      {"nbd-devices = 7-3\n", ":1: nbd-devices:"},
      {"colour = blue\n", ":1: unknown key 'colour'"},
      {"just some words\n", ":1: expected 'key = value'"},
      {"attach = kernel\nattach = auto\n", ":2: attach is already set on line 1"},
      {"idle-timeout = -5\n", ":1: idle-timeout needs a number"},
  };
  for (const auto& [text, expected] : cases) {
    write_file(tmp / "bad.conf", text);
    DaemonConfig c;
    std::string err = error_of([&] { c.load_file(tmp / "bad.conf"); });
    EXPECT_NE(err.find(tmp / "bad.conf" + expected), std::string::npos) << text << "gave: " << err;
  }
}

TEST(ConfigTest, MissingFileIsAnError) {
  DaemonConfig c;
  EXPECT_NE(error_of([&] { c.load_file("/nonexistent/restorefs.conf"); }).find("/nonexistent/restorefs.conf: cannot read"),
            std::string::npos);
}

TEST(ConfigTest, LaterSetOverridesTheFileAndRecordsItsOrigin) {
  TempDir tmp;
  write_file(tmp / "a.conf", "idle-timeout = 600\nattach = kernel\n");
  DaemonConfig c;
  c.load_file(tmp / "a.conf");
  c.set("idle-timeout", "30", "command line");
  EXPECT_EQ(c.options().idle_timeout.count(), 30);
  EXPECT_EQ(c.options().attach_mode, "kernel");
  for (const auto& [key, setting] : c.effective()) {
    if (key == "idle-timeout") {
      EXPECT_EQ(setting.origin, "command line");
    }
    if (key == "attach") {
      EXPECT_EQ(setting.origin, tmp / "a.conf:2");
    }
    if (key == "max-mounts") {
      EXPECT_EQ(setting.origin, "default");
    }
  }
  EXPECT_NE(error_of([&] { c.set("max-mounts", "lots", "command line"); }).find("max-mounts needs a number"),
            std::string::npos);
}

TEST(ConfigTest, FlagsMapToKeys) {
  EXPECT_EQ(config::key_for_flag("--idle-timeout"), "idle-timeout");
  EXPECT_EQ(config::key_for_flag("--metrics-listen"), "metrics-listen");
  EXPECT_EQ(config::key_for_flag("--mountpoint"), "");
  EXPECT_EQ(config::key_for_flag("--colour"), "");
  EXPECT_EQ(config::key_for_flag("idle-timeout"), "");
}

}  // namespace
}  // namespace sendense::test
