// Isolation (issue 10): the real daemon with --isolation worker on a real
// FUSE mount. Every attached backup is served by a sandboxed
// `sendense-restore-worker BACKUP_ID`, a child of the daemon; this checks
// the data through workers, the sandbox from outside (/proc), and that a
// worker killed or hung fails only its own backup, which then attaches
// again, without leaking processes or descriptors.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"
#include "worker/probes.h"

namespace sendense::test {
namespace {

using namespace std::chrono_literals;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Children of `parent` (from /proc/*/stat), with their state letter.
std::map<pid_t, char> children_of(pid_t parent) {
  std::map<pid_t, char> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    const std::string stat = read_text("/proc/" + std::string(e->d_name) + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out[pid] = state;
  }
  ::closedir(d);
  return out;
}

// The worker child of `daemon` serving `backup` (its cmdline), or -1.
pid_t worker_of(pid_t daemon, const std::string& backup) {
  for (const auto& [pid, state] : children_of(daemon)) {
    const std::string cmdline = read_text("/proc/" + std::to_string(pid) + "/cmdline");
    const auto nul = cmdline.find('\0');
    if (nul == std::string::npos) continue;
    const std::string arg0 = cmdline.substr(0, nul);
    if (arg0.size() >= 23 && arg0.ends_with("sendense-restore-worker") && cmdline.substr(nul + 1) == backup + '\0')
      return pid;
  }
  return -1;
}

// The spare worker child of `daemon` (started ahead, no backup yet), or -1.
pid_t spare_of(pid_t daemon) {
  for (const auto& [pid, state] : children_of(daemon)) {
    const std::string cmdline = read_text("/proc/" + std::to_string(pid) + "/cmdline");
    const auto nul = cmdline.find('\0');
    if (nul != std::string::npos && cmdline.substr(0, nul).ends_with("sendense-restore-worker") &&
        cmdline.compare(nul + 1, 8, std::string("--spare") + '\0') == 0 && state != 'Z')
      return pid;
  }
  return -1;
}

int fd_count(pid_t pid) {
  int n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// Its descriptors but the pipes it holds both ends of: libfuse keeps one
// such pipe per FUSE thread that has spliced a reply (fuse_ops.cpp:
// reply_mapped), for the thread's life, so their number follows how many
// threads a load woke, not what was attached. A pipe to a child (a
// worker's stderr) has one end here and is counted.
int fd_count_but_splice_pipes(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd/";
  std::map<std::string, int> pipes;
  int n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(dir + e->d_name, ec).string();
    if (target.starts_with("pipe:")) ++pipes[target];
    else ++n;
  }
  ::closedir(d);
  for (const auto& [pipe, ends] : pipes)
    if (ends != 2) n += ends;
  return n;
}

// Reads `path` in 1 MiB pieces (the page cache dropped first, so the reads
// reach the daemon), pausing `pause` between pieces; counts progress.
struct ReadResult {
  int error = 0;
  std::string data;
};
ReadResult read_file_slowly(const std::string& path, std::chrono::milliseconds pause, std::atomic<size_t>* progress) {
  ReadResult r;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r.error = errno;
    return r;
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::vector<char> buf(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      r.error = errno;
      break;
    }
    if (n == 0) break;
    r.data.append(buf.data(), static_cast<size_t>(n));
    if (progress) progress->store(r.data.size());
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }
  ::close(fd);
  return r;
}

// Walks `root` depth-first as find(1) would (readdir, lstat of each
// entry), pausing `pause` after each entry; stops at the first error.
struct WalkResult {
  int error = 0;
  std::string where;
  size_t entries = 0;
};
void walk_slowly(const std::string& dir, std::chrono::milliseconds pause, std::atomic<size_t>& progress, WalkResult& r) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    r.error = errno;
    r.where = dir;
    return;
  }
  std::vector<std::string> subdirs;
  for (;;) {
    errno = 0;
    dirent* e = ::readdir(d);
    if (!e) {
      if (errno != 0) {
        r.error = errno;
        r.where = dir;
      }
      break;
    }
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      r.error = errno;
      r.where = dir + "/" + e->d_name;
      break;
    }
    if (S_ISDIR(st.st_mode)) subdirs.push_back(dir + "/" + e->d_name);
    progress.store(++r.entries);
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }
  ::closedir(d);
  for (const auto& sub : subdirs) {
    if (r.error != 0) return;
    walk_slowly(sub, pause, progress, r);
  }
}

class IsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = fixtures_dir();
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("fixtures were not built: " << read_text(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env")) << "no fixtures in " << fx_;
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    if (::geteuid() != 0) SENDENSE_SKIP("the worker sandbox needs root");
    Manifest manifest(fx_ + "/manifest.env");
    full_ = manifest["FULL_ID"];
    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    CommandResult r = cli("catalog import " + q(fx_ + "/repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    // A backup with one large file and a tree of 2,000 files in 40 folders
    // (a whole-disk ext4): a read and a walk long enough to kill its worker
    // in the middle.
    const std::string src = tmp_ / "big-src";
    run_ok("mkdir -p " + q(src) + " " + q(tmp_ / "big-repo") + " && head -c 64M /dev/urandom >" + q(src + "/big.bin") +
           " && cd " + q(src) + " && for d in $(seq -w 0 39); do mkdir -p tree/d$d && for f in $(seq -w 0 49); do "
           "echo $d$f >tree/d$d/f$f; done; done");
    big_data_ = read_text(src + "/big.bin");
    run_ok("mkfs.ext4 -q -F -d " + q(src) + " " + q(tmp_ / "big-repo" + "/" + big_ + ".raw") + " 96M");
    r = cli("catalog import " + q(tmp_ / "big-repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
  }

  void TearDown() override {
    if (!daemon_) return;
    const pid_t pid = daemon_->pid();
    EXPECT_EQ(daemon_->stop(), "") << "stopping the daemon with SIGTERM";
    EXPECT_FALSE(is_mounted(mnt_)) << "mount left behind";
    if (pid > 0) {
      EXPECT_TRUE(children_of(pid).empty()) << "a worker outlived the daemon";
    }
    const std::string log = daemon_->log();
    for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer", "seccomp: system call"})
      EXPECT_EQ(log.find(bad), std::string::npos) << "daemon log holds \"" << bad << "\"";
    CommandResult sums = run("cd " + q(fx_ + "/repo") + " && sha256sum --quiet -c ../repo.sha256");
    EXPECT_EQ(sums.status, 0) << "an image changed:\n" << sums.output;
    if (HasFailure()) std::cerr << "---- daemon log (" << daemon_->log_path() << ") ----\n" << log.substr(log.size() > 20000 ? log.size() - 20000 : 0);
  }

  CommandResult cli(const std::string& args) { return run(q(cli_binary()) + " " + args + " --catalog " + q(catalog_)); }

  void start(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--isolation", "worker"};
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_EQ(daemon_->start(args), "") << "starting the daemon";
  }

  std::string vol(const std::string& id, const std::string& volume) const { return mnt_ + "/" + id + "/" + volume; }
  std::string big_file() const { return vol(big_, "disk") + "/big.bin"; }

  // The sandbox of worker `w` of `backup`, seen from outside (issue 10).
  void expect_sandboxed(pid_t w, const std::string& backup) {
    EXPECT_EQ(read_text("/proc/" + std::to_string(w) + "/cmdline").substr(read_text("/proc/" + std::to_string(w) + "/cmdline").find('\0') + 1),
              backup + '\0');
    std::istringstream uids(status_field(w, "Uid"));
    for (int i = 0; i < 4; ++i) {
      long uid = -1;
      uids >> uid;
      EXPECT_GE(uid, 2147000000L) << "Uid: " << status_field(w, "Uid");
    }
    std::istringstream gids(status_field(w, "Gid"));
    long gid = 0;
    gids >> gid;
    EXPECT_GE(gid, 2147000000L);
    EXPECT_EQ(status_field(w, "Groups"), "");
    EXPECT_EQ(status_field(w, "NoNewPrivs"), "1");
    EXPECT_EQ(status_field(w, "Seccomp"), "2");
    EXPECT_EQ(status_field(w, "CapEff"), "0000000000000000");
    EXPECT_EQ(status_field(w, "CapPrm"), "0000000000000000");
    EXPECT_EQ(status_field(w, "CapBnd"), "0000000000000000");
    // Its own namespaces (the host allowing): pid 1 inside its pid namespace.
    for (const char* ns : {"mnt", "net", "ipc", "uts", "pid"}) {
      std::error_code ec;
      const auto mine = std::filesystem::read_symlink("/proc/self/ns/" + std::string(ns), ec);
      const auto its = std::filesystem::read_symlink("/proc/" + std::to_string(w) + "/ns/" + ns, ec);
      EXPECT_NE(mine, its) << ns << " namespace shared with the host";
    }
    EXPECT_EQ(status_field(w, "NSpid").substr(status_field(w, "NSpid").rfind('\t') + 1), "1");
    // Its root is empty; it holds only the socket and the images (and their dups).
    EXPECT_EQ(run_ok("ls -A /proc/" + std::to_string(w) + "/root/ | wc -l"), "0\n");
    const std::string fds = run_ok("ls -l /proc/" + std::to_string(w) + "/fd/");
    EXPECT_EQ(fds.find("/dev/"), fds.find("/dev/null")) << fds;  // no device but stdio
    EXPECT_NE(fds.find("socket:"), std::string::npos) << fds;
    EXPECT_NE(fds.find("repo/"), std::string::npos) << fds;  // its images (fixture repo, big-repo)
  }

  // Attaches `backup` (a lookup inside it) and returns its worker's pid.
  pid_t attach(const std::string& backup, const std::string& volume) {
    struct stat st {};
    pid_t pid = -1;
    wait_for(
        [&] {
          if (::stat(vol(backup, volume).c_str(), &st) != 0) return false;
          pid = worker_of(daemon_->pid(), backup);
          return pid > 0;
        },
        10s);
    return pid;
  }

  TempDir tmp_;
  std::string fx_, full_, mnt_, catalog_;
  const std::string big_ = "backup-big-20260105000000";
  std::string big_data_;
  std::unique_ptr<RestoreDaemon> daemon_;
};

TEST_F(IsolationTest, FilesReadThroughWorkersMatchTheirSource) {
  start();
  CommandResult mine = run(checksums_command(vol(full_, "part1"), true));
  CommandResult want = run(checksums_command(fx_ + "/src", true));
  ASSERT_EQ(mine.status, 0) << mine.output;
  EXPECT_EQ(mine.output, want.output);
  EXPECT_EQ(run(tree_listing_command(vol(full_, "part1"), true)).output,
            run(tree_listing_command(fx_ + "/src", true)).output);
  EXPECT_EQ(run_ok("readlink " + q(vol(full_, "part1") + "/links/absolute")), "/etc/hostname\n");
  EXPECT_EQ(run_ok("getfattr --absolute-names --only-values -n user.x " + q(vol(full_, "part1") + "/attrs/xattr-file")),
            "hello");
  ReadResult big = read_file_slowly(big_file(), 0ms, nullptr);
  EXPECT_EQ(big.error, 0);
  EXPECT_TRUE(big.data == big_data_) << "the large file differs (" << big.data.size() << " bytes read)";
  // A zlib-compressed qcow2 (MBR with logical partitions): the inflate
  // path in the worker. In release builds it once ended the worker (glibc's
  // per-thread arenas open a /proc file when they shrink).
  const std::string db = Manifest(fx_ + "/manifest.env")["DB_ID"];
  for (const char* part : {"part1", "part5", "part6"}) {
    CommandResult got = run(checksums_command(vol(db, part), true));
    ASSERT_EQ(got.status, 0) << part << ": " << got.output;
    EXPECT_EQ(got.output, run(checksums_command(fx_ + "/src-db-" + part, true)).output) << part;
  }
  EXPECT_EQ(daemon_->log().find("isolation_unavailable"), std::string::npos);
}

TEST_F(IsolationTest, WorkerIsSandboxedAndNamesItsBackup) {
  start();
  const pid_t w = attach(full_, "part1");
  ASSERT_GT(w, 0) << "no worker child for " << full_;
  expect_sandboxed(w, full_);
  // Two backups: two workers with different ids.
  const pid_t w2 = attach(big_, "disk");
  ASSERT_GT(w2, 0);
  EXPECT_NE(status_field(w, "Uid"), status_field(w2, "Uid"));
}

// The worker started ahead (fuse/worker_client.h, SpareWorkers): before
// any attach it holds nothing but its socket; the next attach makes it that
// backup's worker, named and sandboxed like any, serving the right bytes;
// a new spare follows; a spare killed while it waits is reaped and
// replaced, and the attach after it still works.
TEST_F(IsolationTest, ASpareWorkerBecomesTheNextBackupsWorker) {
  start();
  // Ready: started, and its "ready" received by the daemon (a sanitizer
  // build's spare takes a while between its exec and that).
  auto ready = [&](pid_t pid) {
    return count_events(daemon_->log(), "spare_worker_ready", {{"pid", std::to_string(pid)}}) == 1;
  };
  pid_t spare = -1;
  ASSERT_TRUE(wait_for([&] { return (spare = spare_of(daemon_->pid())) > 0 && ready(spare); }, 10s))
      << "no spare worker";
  const std::string spare_fds = run_ok("ls -l /proc/" + std::to_string(spare) + "/fd/");
  EXPECT_EQ(spare_fds.find("repo/"), std::string::npos) << "a spare holds an image:\n" << spare_fds;
  EXPECT_EQ(fd_count(spare), 4) << spare_fds;  // stdio and the socket
  EXPECT_EQ(status_field(spare, "NoNewPrivs"), "1");
  // It waits in its empty root, not holding copies of the host's mounts
  // (the tree's among them: an umount of it would not end its filesystem).
  const std::string spare_mounts = read_text("/proc/" + std::to_string(spare) + "/mountinfo");
  EXPECT_EQ(std::count(spare_mounts.begin(), spare_mounts.end(), '\n'), 1) << spare_mounts;
  EXPECT_EQ(spare_mounts.find(mnt_), std::string::npos) << spare_mounts;
  EXPECT_EQ(run_ok("ls -A /proc/" + std::to_string(spare) + "/root/ | wc -l"), "0\n");

  const pid_t w = attach(full_, "part1");
  ASSERT_EQ(w, spare) << "the attach did not take the spare";
  expect_sandboxed(w, full_);
  CommandResult mine = run(checksums_command(vol(full_, "part1"), true));
  ASSERT_EQ(mine.status, 0) << mine.output;
  EXPECT_EQ(mine.output, run(checksums_command(fx_ + "/src", true)).output);

  pid_t next = -1;
  ASSERT_TRUE(wait_for([&] { return (next = spare_of(daemon_->pid())) > 0 && ready(next); }, 10s))
      << "no new spare after the take";
  EXPECT_NE(next, spare);
  ASSERT_EQ(::kill(next, SIGKILL), 0);
  pid_t again = -1;
  EXPECT_TRUE(wait_for([&] { return (again = spare_of(daemon_->pid())) > 0 && again != next && ready(again); }, 10s))
      << "the killed spare was not replaced";
  for (const auto& [pid, state] : children_of(daemon_->pid())) EXPECT_NE(state, 'Z') << "zombie " << pid;
  const pid_t w2 = attach(big_, "disk");
  ASSERT_GT(w2, 0);
  EXPECT_EQ(w2, again);
  expect_sandboxed(w2, big_);
  ReadResult big = read_file_slowly(big_file(), 0ms, nullptr);
  EXPECT_EQ(big.error, 0);
  EXPECT_TRUE(big.data == big_data_) << "the large file differs (" << big.data.size() << " bytes read)";
  EXPECT_EQ(daemon_->log().find("spare_workers_off"), std::string::npos) << daemon_->log();
}

// A worker killed with SIGKILL, or with SIGSEGV as a crashing parser is, in
// the middle of a large read or of a directory walk: only its backup fails,
// fast, with EIO; a read of another backup at the same time is untouched;
// the next access after the backoff starts a new worker. Repeated (5 times
// each of the four) without leaking processes or descriptors.
TEST_F(IsolationTest, KilledWorkerFailsOnlyItsBackupAndReattaches) {
  start();
  int reps = 20;
  if (const char* r = std::getenv("SENDENSE_ISOLATION_REPS")) reps = std::atoi(r);
  const std::string other = vol(full_, "part1") + "/data/random-3M.bin";
  const std::string other_want = read_text(fx_ + "/src/data/random-3M.bin");
  const std::string tree = vol(big_, "disk") + "/tree";
  int baseline_fds = -1;
  std::map<int, int> killed_by;  // signal -> times
  for (int rep = 0; rep < reps; ++rep) {
    const int sig = rep % 2 == 0 ? SIGKILL : SIGSEGV;
    const bool walk = (rep / 2) % 2 == 1;
    SCOPED_TRACE("repetition " + std::to_string(rep) + ": " + sigabbrev_np(sig) + " during a " + (walk ? "walk" : "read"));
    const pid_t w = attach(big_, "disk");
    ASSERT_GT(w, 0);
    ASSERT_GT(attach(full_, "part1"), 0);
    // With a spare waiting (its socket is one of the daemon's descriptors).
    ASSERT_TRUE(wait_for([&] { return spare_of(daemon_->pid()) > 0; }, 5s));
    if (baseline_fds < 0) baseline_fds = fd_count_but_splice_pipes(daemon_->pid());
    // The kernel's cached entries and pages of the tree would answer
    // without asking the worker: drop them so the walk reaches it.
    if (walk) run_ok("sync; echo 2 >/proc/sys/vm/drop_caches");
    std::atomic<size_t> progress{0};
    std::atomic<bool> stop_other{false};
    ReadResult victim;
    WalkResult walked;
    std::chrono::steady_clock::time_point ended;
    std::thread reader([&] {
      if (walk) walk_slowly(tree, 2ms, progress, walked);
      else victim = read_file_slowly(big_file(), 5ms, &progress);
      ended = std::chrono::steady_clock::now();
    });
    bool other_ok = true;
    int other_reads = 0;
    std::thread bystander([&] {
      while (!stop_other.load()) {
        ReadResult r = read_file_slowly(other, 0ms, nullptr);
        other_ok = other_ok && r.error == 0 && r.data == other_want;
        ++other_reads;
      }
    });
    ASSERT_TRUE(wait_for([&] { return progress.load() >= (walk ? 200u : 4u << 20); }, 20s));
    const auto killed = std::chrono::steady_clock::now();
    daemon_->note(std::string("kill -") + sigabbrev_np(sig) + " worker " + std::to_string(w));
    ASSERT_EQ(::kill(w, sig), 0);
    ++killed_by[sig];
    reader.join();
    std::this_thread::sleep_for(200ms);
    stop_other = true;
    bystander.join();
    if (walk) {
      EXPECT_EQ(walked.error, EIO) << "walked " << walked.entries << " entries; stopped at " << walked.where;
      EXPECT_LT(walked.entries, 2040u);
    } else {
      EXPECT_EQ(victim.error, EIO) << "read " << victim.data.size() << " bytes";
      EXPECT_LT(victim.data.size(), big_data_.size());
      EXPECT_TRUE(big_data_.compare(0, victim.data.size(), victim.data) == 0) << "bytes before the EIO differ";
    }
    EXPECT_LT(ended - killed, 2s) << "EIO came late";
    EXPECT_TRUE(other_ok) << "the other backup's read was disturbed";
    EXPECT_GT(other_reads, 0);
    // The failed worker is reaped (no zombie) and its attach dropped.
    EXPECT_TRUE(wait_for([&] { return children_of(daemon_->pid()).count(w) == 0; }, 5s)) << "worker not reaped";
    EXPECT_TRUE(wait_for([&] { return cli("status").output.find(big_) == std::string::npos; }, 10s))
        << "restore_mounts row of the failed attach still there:\n" << cli("status").output;
    // After the backoff (3 s) the next access attaches a new worker.
    std::this_thread::sleep_for(3200ms);
    ReadResult again = read_file_slowly(big_file(), 0ms, nullptr);
    EXPECT_EQ(again.error, 0);
    EXPECT_TRUE(again.data == big_data_) << "re-attached read differs";
    if (walk) {
      std::atomic<size_t> n{0};
      WalkResult whole;
      walk_slowly(tree, 0ms, n, whole);
      EXPECT_EQ(whole.error, 0) << whole.where;
      EXPECT_EQ(whole.entries, 2040u) << "the re-attached tree differs";
    }
    const pid_t w_new = worker_of(daemon_->pid(), big_);
    EXPECT_GT(w_new, 0);
    EXPECT_NE(w_new, w);
    for (const auto& [pid, state] : children_of(daemon_->pid())) EXPECT_NE(state, 'Z') << "zombie " << pid;
    ASSERT_TRUE(wait_for([&] { return spare_of(daemon_->pid()) > 0; }, 5s));
    EXPECT_LE(children_of(daemon_->pid()).size(), 3u);  // two workers and the spare
    EXPECT_LE(fd_count_but_splice_pipes(daemon_->pid()), baseline_fds) << run_ok("ls -l /proc/" + std::to_string(daemon_->pid()) + "/fd");
    if (HasFatalFailure() || HasFailure()) break;
  }
  const std::string log = daemon_->log();
  for (const auto& [sig, times] : killed_by) {
    EXPECT_EQ(count_events(log, "worker_failed", {{"backup", big_}, {"signal", std::to_string(sig)}}), times)
        << sigabbrev_np(sig);
  }
  EXPECT_EQ(count_events(log, "detach", {{"backup", big_}, {"reason", "worker_failed"}}), reps);
  // The worker's own last words on a SIGSEGV name its backup and the signal.
  if (killed_by.count(SIGSEGV)) {
    EXPECT_NE(log.find("sendense-restore-worker: backup " + big_ + ": fatal signal 11 (SEGV) sent by pid 0"), std::string::npos);
  }
}

// A daemon that dies (SIGKILL: no clean-up of its own) takes its workers
// with it: each sees its socket close and ends. The next daemon serves the
// same mount with new workers.
TEST_F(IsolationTest, WorkersEndWithTheDaemon) {
  start();
  const pid_t w1 = attach(full_, "part1"), w2 = attach(big_, "disk");
  ASSERT_GT(w1, 0);
  ASSERT_GT(w2, 0);
  daemon_->kill_hard();
  auto ended = [](pid_t pid) {
    const std::string state = status_field(pid, "State");
    return state.empty() || state[0] == 'Z';  // gone, or dead and waiting for init to reap it
  };
  EXPECT_TRUE(wait_for([&] { return ended(w1) && ended(w2); }, 5s)) << "workers outlived their daemon";
  ASSERT_EQ(daemon_->start({"--isolation", "worker"}), "") << "restarting the daemon";
  ReadResult again = read_file_slowly(big_file(), 0ms, nullptr);
  EXPECT_EQ(again.error, 0);
  EXPECT_TRUE(again.data == big_data_);
  EXPECT_GT(worker_of(daemon_->pid(), big_), 0);
}

// A worker id that belongs to a real user or group is never used: the
// attach (here sandbox-check's worker, id 2147000000 + 0) fails naming it.
TEST_F(IsolationTest, WorkerIdOwnedByAUserIsRefused) {
  const std::string user = "sendense-idclash";
  run("userdel " + user + " 2>/dev/null");
  run_ok("useradd --system -u 2147000000 -M -N -s /usr/sbin/nologin " + user);
  struct Cleanup {
    std::string user;
    ~Cleanup() { run("userdel " + user); }
  } cleanup{user};
  const CommandResult r = run(q(cli_binary()) + " sandbox-check");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("belongs to user " + user), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("sandbox ok"), std::string::npos) << r.output;
}

// `sendense-restore sandbox-check`: the sandbox seen from outside and each
// forbidden action tried from inside, all stopped by what should stop them.
TEST_F(IsolationTest, SandboxCheckFindsEveryForbiddenActionBlocked) {
  const CommandResult r = run(q(cli_binary()) + " sandbox-check");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("sandbox ok"), std::string::npos) << r.output;
  std::istringstream lines(r.output);
  std::map<std::string, std::string> result;  // action or check -> its RESULT column
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream cols(line);
    std::string first, second;
    cols >> first >> second;
    if (first == "not") cols >> second;  // "not applied NAME"
    if (!second.empty()) result[second] = first;
  }
  for (const worker::ProbeInfo& p : worker::kProbes) {
    ASSERT_TRUE(result.count(p.name)) << "no line for " << p.name << "\n" << r.output;
#if defined(__SANITIZE_ADDRESS__)
    if (std::string(p.name) == "memory") {
      EXPECT_EQ(result[p.name], "not") << "sanitizer builds apply no RLIMIT_AS";
      continue;
    }
#endif
    EXPECT_EQ(result[p.name], "ok") << p.name << "\n" << r.output;
  }
  for (const char* check : {"uid", "capabilities", "no_new_privs", "seccomp", "dumpable", "namespaces", "root",
                            "descriptors", "limits"})
    EXPECT_EQ(result[check], "ok") << check << "\n" << r.output;
  // --json says the same.
  const CommandResult j = run(q(cli_binary()) + " sandbox-check --json");
  EXPECT_EQ(j.status, 0);
  EXPECT_NE(j.output.find("\"ok\": true"), std::string::npos) << j.output;
  EXPECT_EQ(j.output.find("FAILED"), std::string::npos) << j.output;
}

TEST_F(IsolationTest, FilesWithKnownMapsAreReadByTheDaemonItself) {
  start({"--worker-timeout", "2"});
  const pid_t w = attach(big_, "disk");
  ASSERT_GT(w, 0);
  const std::string dir = vol(big_, "disk") + "/tree/d07";
  run_ok("ls -l " + q(dir) + " >/dev/null");  // readdirplus: the files' attributes and maps
  // A large file's map is asked for by its first read, once.
  ReadResult first = read_file_slowly(big_file(), 0ms, nullptr);
  ASSERT_EQ(first.error, 0);
  ASSERT_EQ(::kill(w, SIGSTOP), 0);
  // The maps are known: the reads send the worker nothing, so a stopped
  // worker delays none of them (through it, each would wait for the 2 s
  // watchdog and fail).
  const auto t0 = std::chrono::steady_clock::now();
  CommandResult got = run("cd " + q(dir) + " && cat f00 f17 f49");
  ReadResult again = read_file_slowly(big_file(), 0ms, nullptr);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(::kill(w, SIGCONT), 0);
  EXPECT_EQ(got.status, 0) << got.output;
  EXPECT_EQ(got.output, "0700\n0717\n0749\n");
  EXPECT_EQ(again.error, 0);
  EXPECT_TRUE(again.data == big_data_) << "the large file differs (" << again.data.size() << " bytes read)";
  EXPECT_LT(took, 1500ms);
  EXPECT_EQ(count_events(daemon_->log(), "worker_failed", {{"backup", big_}}), 0);
}

// `ls -l` asks each entry for its POSIX ACLs: the xattr names of a
// folder's first page come in one request, then each entry's listxattr and
// the getxattr of a name it lacks are answered by the daemon; the values
// (and names a list does not show) are still the worker's.
TEST_F(IsolationTest, AFoldersXattrNamesComeInOneRequest) {
  start({"--worker-timeout", "2"});
  const pid_t w = attach(full_, "part1");
  ASSERT_GT(w, 0);
  const std::string dir = vol(full_, "part1") + "/attrs";
  const std::string src = fx_ + "/src/attrs";
  // The first pages with attributes (the volume's root: its names answer
  // the lookups of the path), then the ACL getxattrs of `ls -l`.
  run_ok("ls -l " + q(vol(full_, "part1")) + " " + q(dir) + " >/dev/null");
  // Every name and value, ACLs included, as the source has them.
  const std::string dump = "getfattr -h -d -m - -e hex * 2>&1 | sort";
  EXPECT_EQ(run_ok("cd " + q(dir) + " && " + dump), run_ok("cd " + q(src) + " && " + dump));
  // Names, and what each lacks, from the daemon alone: a stopped worker
  // delays none of it (through it, each call would wait for the watchdog).
  // (The names to ask come from the source: a listing would be a request;
  // -I: no import looks into the current folder.)
  const std::string names =
      "python3 -I -c 'import os,errno,sys\n"
      "for f in sorted(os.listdir(sys.argv[1])):\n"
      "  p=os.path.join(sys.argv[2],f)\n"
      "  have=sorted(os.listxattr(p,follow_symlinks=False))\n"
      "  lacks=[]\n"
      "  for n in (\"system.posix_acl_access\",\"system.posix_acl_default\",\"security.selinux\",\"user.none\"):\n"
      "    if n in have: continue\n"
      "    try: os.getxattr(p,n,follow_symlinks=False)\n"
      "    except OSError as e:\n"
      "      if e.errno==errno.ENODATA: lacks.append(n)\n"
      "      else: raise\n"
      "  print(f,have,lacks)' " + q(src) + " ";
  const std::string want = run_ok(names + q(src));
  ASSERT_NE(want.find("acl-file ['system.posix_acl_access']"), std::string::npos) << want;
  ASSERT_EQ(::kill(w, SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  CommandResult got = run(names + q(dir));
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(::kill(w, SIGCONT), 0);
  EXPECT_EQ(got.status, 0) << got.output;
  EXPECT_EQ(got.output, want);
  EXPECT_LT(took, 1500ms);
  EXPECT_EQ(count_events(daemon_->log(), "worker_failed", {{"backup", full_}}), 0);
}

// Reading ahead (fuse/prefetch.h): the files after the one a READ asks for
// reach the kernel's page cache without a READ of their own: a raw image's
// from the daemon's own descriptors (their maps), a zlib-compressed one's
// in read_files requests to its worker. What the kernel holds is the
// files' bytes, and a walk of the whole tree reads every byte right.
TEST_F(IsolationTest, SmallFilesAreReadAheadIntoThePageCache) {
  // A zlib-compressed qcow2 of a small tree: its clusters are not mapped.
  const std::string zsrc = tmp_ / "z-src", zrepo = tmp_ / "z-repo", zid = "backup-zsmall-20260106000000";
  run_ok("mkdir -p " + q(zrepo) + " " + q(zsrc) + " && cd " + q(zsrc) + " && for d in 0 1 2; do "
         "mkdir -p tree/d$d && for i in $(seq 0 59); do head -c $((i * 97 + 1)) /dev/urandom | base64 "
         ">tree/d$d/f$(printf %02d $i) || exit 1; done; done");
  run_ok("mkfs.ext4 -q -F -d " + q(zsrc) + " " + q(tmp_ / "z.raw") + " 16M && qemu-img convert -c -O qcow2 " +
         q(tmp_ / "z.raw") + " " + q(zrepo + "/" + zid + ".qcow2"));
  ASSERT_EQ(cli("catalog import " + q(zrepo)).status, 0);
  start({"--log-level", "debug"});
  auto reads = [&] { return count_events(daemon_->log(), "op", {{"op", "read"}}); };
  for (const auto& [backup, src, files] :
       {std::tuple{big_, tmp_ / "big-src/tree/d07", 50}, std::tuple{zid, zsrc + "/tree/d1", 60}}) {
    SCOPED_TRACE(backup);
    const std::string dir = vol(backup, "disk") + src.substr(src.rfind("/tree/"));
    const int windows = count_events(daemon_->log(), "prefetched");
    run_ok("ls -l " + q(dir) + " >/dev/null");  // the kernel knows the files (readdirplus)
    run_ok("cat " + q(dir + "/f00") + " >/dev/null");
    // One READ reads ahead the other files, in windows of 4, 8, 16, 32 (or
    // the listing did: a READ came less than a second before).
    EXPECT_TRUE(wait_for([&] { return count_events(daemon_->log(), "prefetched") >= windows + 4; }, 10s))
        << "no read ahead after the first file's READ";
    const int before = reads();
    EXPECT_EQ(run_ok("cd " + q(dir) + " && sha256sum f*"), run_ok("cd " + q(src) + " && sha256sum f*"));
    EXPECT_EQ(reads() - before, 0) << "files read ahead were asked for again";
    EXPECT_EQ(count_events(daemon_->log(), "prefetched", {{"stored", "0"}}), 0);
  }
  // A walk of a whole tree (folders read ahead as they are listed, READs
  // waiting for the window being read) reads every byte right.
  run_ok("tar -cf - -C " + q(vol(big_, "disk")) + " tree | cat >/dev/null");
  run_ok("tar -cf - -C " + q(vol(zid, "disk")) + " tree | cat >/dev/null");
  EXPECT_EQ(run(checksums_command(vol(big_, "disk") + "/tree", false)).output,
            run(checksums_command(tmp_ / "big-src/tree", false)).output);
  EXPECT_EQ(run(checksums_command(vol(zid, "disk") + "/tree", false)).output,
            run(checksums_command(zsrc + "/tree", false)).output);
  EXPECT_EQ(count_events(daemon_->log(), "worker_failed"), 0);
}

// A large folder: the kernel lists its first part with attributes and the
// rest without, so it has no inode for most files when their window is read
// ahead, and refuses the store (ENOENT); a walk then looks each one up and
// reads it. Those files are kept and their READs answered from them: with
// the worker stopped, none of them needs it (through it, each would wait
// for the watchdog, then fail).
TEST_F(IsolationTest, FilesTheKernelCouldNotTakeAreKeptForTheirRead) {
  const std::string src = tmp_ / "w-src", repo = tmp_ / "w-repo", id = "backup-wide-20260108000000";
  run_ok("mkdir -p " + q(repo) + " " + q(src + "/wide") + " && cd " + q(src + "/wide") +
         " && for i in $(seq 0 599); do head -c $((i % 50 * 61 + 1)) /dev/urandom | base64 >f$(printf %03d $i) || "
         "exit 1; done");
  run_ok("mkfs.ext4 -q -F -d " + q(src) + " " + q(tmp_ / "w.raw") + " 16M && qemu-img convert -c -O qcow2 " +
         q(tmp_ / "w.raw") + " " + q(repo + "/" + id + ".qcow2"));
  ASSERT_EQ(cli("catalog import " + q(repo)).status, 0);
  start({"--log-level", "debug", "--worker-timeout", "2"});
  const pid_t w = attach(id, "disk");
  ASSERT_GT(w, 0);
  const std::string dir = vol(id, "disk") + "/wide";
  // The folder's order (the walk's); no stat, so no lookup makes inodes.
  std::vector<std::string> order;
  std::istringstream listed(run_ok("ls -f " + q(dir)));
  for (std::string name; std::getline(listed, name);)
    if (name != "." && name != "..") order.push_back(name);
  ASSERT_EQ(order.size(), 600u);
  // A READ of a file past the part listed with attributes (the kernel's
  // first request, at most 32 KiB of entries: about 200 here) reads ahead
  // the next 128 (kAheadFiles).
  const size_t first = 400;
  const int windows = count_events(daemon_->log(), "prefetched");
  run_ok("cat " + q(dir + "/" + order[first]) + " >/dev/null");
  ASSERT_TRUE(wait_for([&] { return count_events(daemon_->log(), "prefetched") >= windows + 7; }, 10s))
      << "the windows of 128 files (4, 8, 16, 32, 32, 32, 4) were not all read ahead";
  // The premise: most were refused (the kernel had no inode for them).
  int refused = 0;
  std::istringstream lines(daemon_->log());
  for (std::string line; std::getline(lines, line);) {
    if (line.find(" prefetched ") == std::string::npos) continue;
    auto field = [&](const std::string& key) {
      const size_t at = line.find(" " + key + "=");
      return at == std::string::npos ? 0 : std::atoi(line.c_str() + at + key.size() + 2);
    };
    refused += field("files") - field("stored") - field("to_reads");
  }
  ASSERT_GT(refused, 50) << "the kernel took the files: no case to test";
  ASSERT_EQ(::kill(w, SIGSTOP), 0);
  std::string names;
  for (size_t i = first + 1; i <= first + 128; ++i) names.append(" ").append(q(order[i]));
  CommandResult got = run("cd " + q(dir) + " && sha256sum" + names);
  ::kill(w, SIGCONT);  // (gone if the watchdog killed it: the failures below say so)
  EXPECT_EQ(got.status, 0) << got.output;
  EXPECT_EQ(got.output, run_ok("cd " + q(src + "/wide") + " && sha256sum" + names));
  EXPECT_EQ(count_events(daemon_->log(), "worker_failed"), 0);
}

// A walk lists the subfolders of a large folder one by one and looks up
// the folder's entries between them (those the kernel listed without
// attributes): the folder's names must outlast hundreds of subfolders'
// listings, or each lookup is a request to the worker.
TEST_F(IsolationTest, AFoldersNamesOutlastItsSubfoldersListings) {
  const std::string src = tmp_ / "n-src", repo = tmp_ / "n-repo", id = "backup-names-20260109000000";
  run_ok("mkdir -p " + q(repo) + " && for i in $(seq 0 299); do mkdir -p " + q(src) +
         "/many/s$i && echo $i >" + q(src) + "/many/s$i/f || exit 1; done");
  run_ok("mkfs.ext4 -q -F -d " + q(src) + " " + q(tmp_ / "n.raw") + " 16M && qemu-img convert -O qcow2 " +
         q(tmp_ / "n.raw") + " " + q(repo + "/" + id + ".qcow2"));
  ASSERT_EQ(cli("catalog import " + q(repo)).status, 0);
  start({"--worker-timeout", "2"});
  const pid_t w = attach(id, "disk");
  ASSERT_GT(w, 0);
  const std::string dir = vol(id, "disk") + "/many";
  run_ok("ls -f " + q(vol(id, "disk")) + " " + q(dir) + " >/dev/null && for i in $(seq 0 299); do ls -f " + q(dir) +
         "/s$i >/dev/null || exit 1; done");
  // The kernel forgets the entries (so it must look them up again)...
  run_ok("sync && echo 2 >/proc/sys/vm/drop_caches");
  // ... and the daemon answers every lookup: a stopped worker delays none.
  ASSERT_EQ(::kill(w, SIGSTOP), 0);
  CommandResult got = run("cd " + q(dir) + " && for i in $(seq 0 299); do stat -c %n:%F s$i || exit 1; done | sort | md5sum");
  ::kill(w, SIGCONT);  // (gone if the watchdog killed it: the failures below say so)
  EXPECT_EQ(got.status, 0) << got.output;
  EXPECT_EQ(got.output,
            run_ok("cd " + q(src + "/many") + " && for i in $(seq 0 299); do stat -c %n:%F s$i; done | sort | md5sum"));
  EXPECT_EQ(count_events(daemon_->log(), "worker_failed"), 0);
}

// Large reads of mapped files are replied with the image files' own bytes,
// spliced into /dev/fuse (fuse_ops.cpp: reply_mapped), by a worker's daemon
// and in process alike. The files are made fragmented and sparse on a real
// ext4 (a loop mount, chunks of two files written in turn), so replies join
// several pieces of the image and holes; one file's 4 KiB fragments are too
// many pieces for one reply and go the copying way. Every byte must match.
TEST_F(IsolationTest, LargeReadsAreSplicedFromTheImages) {
  const std::string src = tmp_ / "frag-src", m = tmp_ / "frag-mnt", raw = tmp_ / "frag.raw";
  const std::string id = "backup-frag-20260107000000", repo = tmp_ / "frag-repo";
  run_ok("mkdir -p " + q(src) + " " + q(m) + " " + q(repo) + " && mkfs.ext4 -q -F " + q(raw) + " 48M && mount -o loop " +
         q(raw) + " " + q(m));
  CommandResult made = run("cd " + q(m) + " && for i in $(seq 0 39); do head -c 65536 /dev/urandom >>a.bin && sync && "
                           "head -c 65536 /dev/urandom >>b.bin && sync || exit 1; done && for i in $(seq 0 15); do "
                           "dd if=/dev/urandom of=sparse.bin bs=64K count=1 seek=$((i * 3)) conv=notrunc status=none || "
                           "exit 1; done && truncate -s 4M sparse.bin && for i in $(seq 0 299); do "
                           "head -c 4096 /dev/urandom >>tiny.bin && sync && head -c 4096 /dev/urandom >>pad.bin && sync "
                           "|| exit 1; done && cp a.bin b.bin sparse.bin tiny.bin " + q(src) + " && filefrag a.bin tiny.bin");
  run("umount " + q(m));
  ASSERT_EQ(made.status, 0) << made.output;
  // The premise: the files are in many pieces.
  for (const char* f : {"a.bin: ", "tiny.bin: "}) {
    const auto at = made.output.find(f);
    ASSERT_NE(at, std::string::npos) << made.output;
    EXPECT_GE(std::atoi(made.output.c_str() + at + std::strlen(f)), 10) << made.output;
  }
  run_ok("qemu-img convert -O qcow2 " + q(raw) + " " + q(repo + "/" + id + ".qcow2"));
  ASSERT_EQ(cli("catalog import " + q(repo)).status, 0);
  const std::string sums = run_ok("cd " + q(src) + " && sha256sum a.bin b.bin sparse.bin tiny.bin");
  for (const char* mode : {"worker", "none"}) {
    SCOPED_TRACE(mode);
    const int port = free_port();
    ASSERT_EQ(daemon_->start({"--isolation", mode, "--metrics-listen", "127.0.0.1:" + std::to_string(port)}), "");
    run_ok("sync && echo 3 >/proc/sys/vm/drop_caches");
    EXPECT_EQ(run_ok("cd " + q(vol(id, "disk")) + " && sha256sum a.bin b.bin sparse.bin tiny.bin"), sums);
    // Reads from the middle of pieces too (the kernel reads from page boundaries).
    EXPECT_EQ(run_ok("dd if=" + q(vol(id, "disk") + "/a.bin") + " bs=300000 skip=3 status=none | sha256sum"),
              run_ok("dd if=" + q(src + "/a.bin") + " bs=300000 skip=3 status=none | sha256sum"));
    const std::string metrics = run_ok("curl -sf http://127.0.0.1:" + std::to_string(port) + "/metrics");
    const std::string key = "sendense_fuse_read_bytes_total{op=\"read_spliced\"} ";
    const auto at = metrics.find(key);
    ASSERT_NE(at, std::string::npos) << metrics;
    EXPECT_GE(std::atoll(metrics.c_str() + at + key.size()), 4ll << 20) << "large reads were not spliced";
    EXPECT_EQ(count_events(daemon_->log(), "op_failed"), 0);
    ASSERT_EQ(daemon_->stop(), "");
  }
  // A pipe that may not grow to hold a reply (pipe-max-size lowered):
  // libfuse would copy every such reply through a buffer it allocates; a
  // thread that sees it reads by itself from then on (`splice_off`), and
  // the bytes are the same. (A daemon with CAP_SYS_RESOURCE grows its
  // pipes past the limit and still splices.)
  const std::string max_size = trim(read_text("/proc/sys/fs/pipe-max-size"));
  run_ok("echo 65536 >/proc/sys/fs/pipe-max-size");
  const int port = free_port();
  const std::string started = daemon_->start({"--metrics-listen", "127.0.0.1:" + std::to_string(port)});
  CommandResult read = run("sync && echo 3 >/proc/sys/vm/drop_caches && cd " + q(vol(id, "disk")) +
                           " && sha256sum a.bin b.bin sparse.bin tiny.bin");
  const std::string metrics = run("curl -sf http://127.0.0.1:" + std::to_string(port) + "/metrics").output;
  run_ok("echo " + max_size + " >/proc/sys/fs/pipe-max-size");
  ASSERT_EQ(started, "");
  EXPECT_EQ(read.output, sums);
  const bool spliced = metrics.find("sendense_fuse_read_bytes_total{op=\"read_spliced\"} 0\n") == std::string::npos;
  EXPECT_TRUE(spliced || count_events(daemon_->log(), "splice_off") > 0) << "libfuse copied replies unseen";
}

TEST_F(IsolationTest, HungWorkerIsKilledByTheWatchdog) {
  start({"--worker-timeout", "2"});
  const pid_t w = attach(big_, "disk");
  ASSERT_GT(w, 0);
  ASSERT_EQ(::kill(w, SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  ReadResult r = read_file_slowly(big_file(), 0ms, nullptr);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.error, EIO);
  EXPECT_LT(took, 5s) << "the watchdog (2 s) took too long";
  EXPECT_GE(took, 1500ms);
  EXPECT_TRUE(wait_for([&] { return children_of(daemon_->pid()).count(w) == 0; }, 5s)) << "stopped worker not reaped";
  EXPECT_EQ(count_events(daemon_->log(), "worker_failed", {{"backup", big_}, {"timeout", "2"}}), 1);
  std::this_thread::sleep_for(3200ms);
  ReadResult again = read_file_slowly(big_file(), 0ms, nullptr);
  EXPECT_EQ(again.error, 0);
  EXPECT_TRUE(again.data == big_data_);
}

}  // namespace
}  // namespace sendense::test
