// Integration harness: the fixtures made by tests/fixtures/make-fixtures.sh,
// and the real sendense-restorefs daemon on a real FUSE mount.
//
// Header-only so the daemon_test target stays one source file.
//
// RestoreDaemon starts `sendense-restorefs MOUNT --catalog DB -f ...` as a
// child with stdout+stderr in a log file, waits (bounded) until the mount is
// in /proc/self/mountinfo, and stop() sends SIGTERM, waits, checks the mount
// was left to the holder and takes it down with --unmount. Its destructor is
// the safety net (SIGKILL, --unmount, `umount -l`), so a failing test never
// leaves a mount or a process behind.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_support.h"

namespace sendense::test {

// Log lines: "<time> <level> <event> key=value ...". Counts lines holding the
// event word and every key=value (value may be quoted), in any order.
inline int count_events(const std::string& log, const std::string& event,
                        const std::vector<std::pair<std::string, std::string>>& keys = {}) {
  int n = 0;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ws(line);
    std::vector<std::string> tokens;
    std::string t;
    while (ws >> t) tokens.push_back(t);
    bool has_event = false;
    for (const auto& tok : tokens) has_event |= tok == event;
    if (!has_event) continue;
    bool all = true;
    for (const auto& [k, v] : keys) {
      bool found = false;
      for (const auto& tok : tokens) found |= tok == k + "=" + v || tok == k + "=\"" + v + "\"";
      all &= found;
    }
    n += all;
  }
  return n;
}

inline std::string build_dir() { return SENDENSE_BUILD_DIR; }
inline std::string fixtures_dir() { return SENDENSE_FIXTURES_DIR; }
inline std::string restorefs_binary() { return build_dir() + "/sendense-restorefs"; }
inline std::string cli_binary() { return build_dir() + "/sendense-restore"; }

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// KEY="value" lines of OUTDIR/manifest.env.
class Manifest {
 public:
  explicit Manifest(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::string line;
    while (std::getline(in, line)) {
      auto eq = line.find('=');
      if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
      std::string value = line.substr(eq + 1);
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
      values_[line.substr(0, eq)] = value;
    }
  }
  std::string operator[](const std::string& key) const {
    auto it = values_.find(key);
    if (it == values_.end()) throw std::runtime_error("manifest.env has no " + key);
    return it->second;
  }
  std::vector<std::string> list(const std::string& key) const {
    std::vector<std::string> out;
    std::istringstream in((*this)[key]);
    std::string word;
    while (in >> word) out.push_back(word);
    return out;
  }

 private:
  std::map<std::string, std::string> values_;
};

// Mount points listed in /proc/self/mountinfo (octal escapes decoded), with
// their per-mount options and filesystem type.
struct MountEntry {
  std::string mount_point;
  std::string mount_options;  // per-mount (ro, nosuid, nodev, ...)
  std::string fs_type;
};

inline std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

inline std::vector<MountEntry> read_mountinfo() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    std::string w;
    while (ls >> w) f.push_back(w);
    if (f.size() < 7) continue;
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    MountEntry e;
    e.mount_point = unescape_mountinfo(f[4]);
    e.mount_options = f[5];
    if (dash + 1 < f.size()) e.fs_type = f[dash + 1];
    out.push_back(e);
  }
  return out;
}

// A field of /proc/PID/status (a thread's id works too), without its
// leading blanks; "" when there is none (or no such process any more).
inline std::string status_field(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key + ":")) {
      std::string v = line.substr(key.size() + 1);
      const auto first = v.find_first_not_of(" \t");
      return first == std::string::npos ? "" : v.substr(first);
    }
  return "";
}

inline bool is_mounted(const std::string& path) {
  for (const auto& e : read_mountinfo())
    if (e.mount_point == path) return true;
  return false;
}

// Polls `pred` every 100 ms until it holds or `timeout` passes.
inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

class RestoreDaemon {
 public:
  RestoreDaemon(std::string mount_point, std::string catalog, std::string log_path)
      : mount_point_(std::move(mount_point)), catalog_(std::move(catalog)), log_path_(std::move(log_path)) {}
  ~RestoreDaemon() { force_cleanup(); }
  RestoreDaemon(const RestoreDaemon&) = delete;
  RestoreDaemon& operator=(const RestoreDaemon&) = delete;

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

  // Starts the daemon in the foreground (-f) as a child process; appends to
  // the log. Returns "" when the mount appeared, else why not.
  std::string start(const std::vector<std::string>& extra_args) {
    if (pid_ > 0) return "already running";
    // --config /dev/null: an installed /etc/sendense-restore/restorefs.conf
    // (metrics-listen, attach, ...) must not change what the tests run.
    std::vector<std::string> args = {restorefs_binary(), mount_point_, "--config", "/dev/null", "--catalog", catalog_,
                                     "-f", "--log-level", "debug"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    // SENDENSE_TEST_ISOLATION=worker runs any integration test with every
    // backup in a sandboxed worker (a test that asks for --isolation itself
    // keeps its own).
    if (const char* iso = std::getenv("SENDENSE_TEST_ISOLATION"); iso && *iso &&
        std::find(args.begin(), args.end(), "--isolation") == args.end()) {
      args.push_back("--isolation");
      args.push_back(iso);
    }
    std::string cmdline;
    for (const auto& a : args) cmdline += (cmdline.empty() ? "" : " ") + a;
    {
      std::ofstream log(log_path_, std::ios::app);
      log << "=== harness: starting " << cmdline << "\n";
    }
    int fd = ::open(log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return "cannot open log " + log_path_;
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fd);
      return "fork failed";
    }
    if (pid == 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::perror("execv sendense-restorefs");
      ::_exit(127);
    }
    ::close(fd);
    pid_ = pid;
    bool up = wait_for(
        [&] {
          if (is_mounted(mount_point_)) return true;
          int st = 0;
          if (::waitpid(pid_, &st, WNOHANG) == pid_) {
            exit_status_ = st;
            pid_ = -1;
            return true;  // exited: stop waiting
          }
          return false;
        },
        std::chrono::seconds(15));
    if (pid_ < 0) return "daemon exited before mounting (" + describe_status(exit_status_) + "); log:\n" + log();
    if (!up) return "mount did not appear in /proc/self/mountinfo within 15 s; log:\n" + log();
    return {};
  }

  // Appends a line to the log (a test's own milestones between daemon lines).
  void note(const std::string& line) {
    std::ofstream log(log_path_, std::ios::app);
    log << "=== harness: " << line << "\n";
  }

  // Takes the tree down for good, as an operator would: SIGTERM (or `sig`),
  // wait up to 20 s, then `sendense-restorefs --unmount` (a stopped daemon
  // leaves its mount to the holder for the next run). Returns "" when the
  // daemon exited 0, the mount was still there for the next run, and
  // --unmount took it and its holder away; else what went wrong (after
  // cleaning up).
  std::string stop(int sig = SIGTERM) {
    if (pid_ <= 0) return is_mounted(mount_point_) ? "not running but still mounted" : "";
    std::string problem = terminate(sig);
    if (problem.empty() && !is_mounted(mount_point_)) problem = "the stopped daemon did not leave its mount to the holder";
    problem += release();
    return problem;
  }

  // `sendense-restorefs --unmount`: the holder unmounts and ends. Returns ""
  // or what is left behind (then cleaned up the hard way).
  std::string release() {
    run(shell_quote(restorefs_binary()) + " --unmount " + shell_quote(mount_point_));
    std::string problem;
    if (!wait_for([&] { return !is_mounted(mount_point_) && !holder_running(); }, std::chrono::seconds(10))) {
      problem = std::string(is_mounted(mount_point_) ? "; mount still present after --unmount" : "") +
                (holder_running() ? "; holder still running after --unmount" : "");
      run("pkill -KILL -f -x " + shell_quote("sendense-restorefs --fuse-holder " + mount_point_));
      if (is_mounted(mount_point_)) run("umount -l " + shell_quote(mount_point_));
    }
    return problem;
  }

  bool holder_running() const {
    return run("pgrep -f -x " + shell_quote("sendense-restorefs --fuse-holder " + mount_point_)).status == 0;
  }

  // Sends `sig` and waits (up to 20 s, then SIGKILL) for the daemon to exit,
  // leaving the mount as the daemon left it (a restart test starts the next
  // daemon on it). Returns "" on exit 0, else the exit status.
  std::string terminate(int sig = SIGTERM) {
    if (pid_ <= 0) return "not running";
    ::kill(pid_, sig);
    return wait_exit(std::chrono::seconds(20), "of signal " + std::to_string(sig));
  }

  // Waits up to `timeout` for the daemon to exit (then SIGKILL). Returns ""
  // on exit 0, else what happened; `after` says after what, for the message.
  std::string wait_exit(std::chrono::seconds timeout, const std::string& after) {
    if (pid_ <= 0) return "not running";
    int st = 0;
    std::string problem;
    if (!wait_for([&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; }, timeout)) {
      problem = "daemon did not exit within " + std::to_string(timeout.count()) + " s " + after;
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
    } else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
      problem = "daemon exit status: " + describe_status(st);
    }
    pid_ = -1;
    exit_status_ = st;
    return problem;
  }

  // SIGKILL, as a crash would: the mount stays, kept by the holder, and
  // requests wait for the next run.
  void kill_hard() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  // Last resort: never leave a process or a mount behind.
  void force_cleanup() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      if (!wait_for([&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; }, std::chrono::seconds(10))) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
      }
      pid_ = -1;
    }
    release();
  }

  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  static std::string describe_status(int st) {
    if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return std::string("killed by signal ") + std::to_string(WTERMSIG(st));
    return "status " + std::to_string(st);
  }

 private:
  std::string mount_point_;
  std::string catalog_;
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
};

// Shell snippets used to compare trees.

// One line per entry: path, type, mode, owner, nlink, mtime with
// nanoseconds, size (not for folders), symlink target. Sorted. Without
// lost+found the folders' link counts are left out (the root's counts it).
inline std::string tree_listing_command(const std::string& dir, bool skip_lost_found) {
  std::string prune = skip_lost_found ? "-path ./lost+found -prune -o " : "";
  std::string dir_nlink = skip_lost_found ? "" : " %n";
  return "cd " + shell_quote(dir) + " && { find . " + prune + "-type d -printf '%p d %m %U %G" + dir_nlink +
         " %T@\\n'; find . " +
         prune + "! -type d -printf '%p %y %m %U %G %n %T@ %s %l\\n'; } | LC_ALL=C sort";
}

inline std::string checksums_command(const std::string& dir, bool skip_lost_found) {
  std::string prune = skip_lost_found ? "-path ./lost+found -prune -o " : "";
  return "cd " + shell_quote(dir) + " && find . " + prune +
         "-type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum";
}

// rsync's own view: content (--checksum), permissions, owners, times, hard
// links, ACLs, xattrs, devices, and extra or missing names (--delete).
inline std::string rsync_compare_command(const std::string& actual, const std::string& expected,
                                         bool skip_lost_found) {
  // --modify-window=-1: compare mtimes to the nanosecond (the default is whole seconds).
  return "rsync -aHAX --modify-window=-1 --dry-run --itemize-changes --checksum --delete " +
         std::string(skip_lost_found ? "--exclude=/lost+found " : "") + shell_quote(actual + "/") + " " +
         shell_quote(expected + "/");
}

}  // namespace sendense::test
