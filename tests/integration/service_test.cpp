// The daemon as a service: systemd notifications (READY=1 only once the tree
// is mounted, WATCHDOG=1 while the FUSE loop answers, STOPPING=1) read from
// a NOTIFY_SOCKET of our own, and the --metrics-listen endpoint scraped while
// backups attach, are read and detach, its text checked by a strict parser
// of the Prometheus text exposition format (version 0.0.4). The real daemon
// on a real FUSE mount over the make_fixtures images.
#include <arpa/inet.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <signal.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

using namespace std::chrono_literals;

// ------------------------------------------------ Prometheus text format

// Samples by "name{label="value",...}" exactly as exposed; parse() fails the
// test on anything the 0.0.4 text format does not allow.
struct Exposition {
  std::map<std::string, double> samples;
  double operator[](const std::string& key) const {
    auto it = samples.find(key);
    if (it == samples.end()) {
      ADD_FAILURE() << "no sample " << key;
      return NAN;
    }
    return it->second;
  }
};

bool parse_value(const std::string& s, double& out) {
  if (s == "+Inf") out = INFINITY;
  else if (s == "-Inf") out = -INFINITY;
  else if (s == "NaN") out = NAN;
  else {
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    if (s.empty() || *end) return false;
  }
  return true;
}

// Hand-written (std::regex trips GCC 12's -Wmaybe-uninitialized under -O2).
bool is_name(const std::string& s, bool colons) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (colons && c == ':'))) return false;
  return true;
}

// `a="x",b="y\"z"` -> label names; false on any syntax error.
bool parse_labels(const std::string& text, std::vector<std::string>& names) {
  size_t i = 0;
  while (i < text.size()) {
    const size_t eq = text.find('=', i);
    if (eq == std::string::npos || !is_name(text.substr(i, eq - i), false)) return false;
    names.push_back(text.substr(i, eq - i));
    if (eq + 1 >= text.size() || text[eq + 1] != '"') return false;
    size_t j = eq + 2;
    for (; j < text.size() && text[j] != '"'; ++j) {
      if (text[j] == '\\') {
        if (j + 1 >= text.size() || (text[j + 1] != '\\' && text[j + 1] != '"' && text[j + 1] != 'n')) return false;
        ++j;
      } else if (text[j] == '\n') {
        return false;
      }
    }
    if (j >= text.size()) return false;  // unterminated value
    i = j + 1;
    if (i == text.size()) break;
    if (text[i] != ',' || i + 1 == text.size()) return false;
    ++i;
  }
  return true;
}

Exposition parse_exposition(const std::string& text) {
  Exposition ex;
  static const std::set<std::string> kinds = {"counter", "gauge", "histogram", "summary", "untyped"};
  std::map<std::string, std::string> types;
  std::set<std::string> finished;  // families whose samples ended (must not reappear)
  std::string current;
  EXPECT_TRUE(!text.empty() && text.back() == '\n') << "exposition must end with a newline";
  std::istringstream in(text);
  std::string line;
  int n = 0;
  auto family_of = [&](const std::string& name) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s = suffix;
      if (name.size() > s.size() && name.ends_with(s)) {
        std::string base = name.substr(0, name.size() - s.size());
        if (types.contains(base) && types[base] == "histogram") return base;
      }
    }
    return name;
  };
  while (std::getline(in, line)) {
    ++n;
    SCOPED_TRACE("line " + std::to_string(n) + ": " + line);
    if (line.starts_with("#")) {
      std::istringstream words(line);
      std::string hash, keyword, name, kind;
      words >> hash >> keyword >> name;
      if (hash != "#" || (keyword != "HELP" && keyword != "TYPE") || !is_name(name, true)) {
        ADD_FAILURE() << "a comment that is neither HELP nor TYPE";
        continue;
      }
      if (keyword == "TYPE") {
        words >> kind;
        std::string extra;
        EXPECT_TRUE(kinds.contains(kind) && !(words >> extra)) << "bad TYPE";
        EXPECT_FALSE(types.contains(name)) << "TYPE given twice";
        EXPECT_FALSE(finished.contains(name) || current == name) << "TYPE after the family's samples";
        types[name] = kind;
      }
      continue;
    }
    // name[{labels}] value [timestamp]
    const size_t brace = line.find('{');
    const size_t name_end = std::min(brace, line.find(' '));
    const std::string name = line.substr(0, name_end);
    std::string labels, rest;
    bool has_labels = false;
    if (brace != std::string::npos && brace == name_end) {
      const size_t close = line.rfind('}');
      if (close == std::string::npos || close < brace) {
        ADD_FAILURE() << "unclosed {";
        continue;
      }
      has_labels = true;
      labels = line.substr(brace + 1, close - brace - 1);
      rest = line.substr(close + 1);
    } else {
      rest = name_end == std::string::npos ? "" : line.substr(name_end);
    }
    std::vector<std::string> fields;
    {
      std::istringstream ws(rest);
      for (std::string w; ws >> w;) fields.push_back(w);
    }
    if (!is_name(name, true) || rest.empty() || rest[0] != ' ' || rest.starts_with("  ") || fields.empty() ||
        fields.size() > 2) {
      ADD_FAILURE() << "not a sample line";
      continue;
    }
    const std::string family = family_of(name);
    EXPECT_TRUE(types.contains(family)) << "sample without a TYPE";
    if (family != current) {
      if (!current.empty()) finished.insert(current);
      EXPECT_FALSE(finished.contains(family)) << "samples of " << family << " are not contiguous";
      current = family;
    }
    if (has_labels) {
      std::vector<std::string> names;
      if (!parse_labels(labels, names)) ADD_FAILURE() << "bad label list {" << labels << "}";
      EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size()) << "a label twice";
    }
    if (fields.size() == 2) {
      const std::string& ts = fields[1];
      const size_t digits = ts.find_first_not_of("0123456789", ts[0] == '-' ? 1 : 0);
      EXPECT_TRUE(digits == std::string::npos && ts != "-") << "bad timestamp " << ts;
    }
    double v = 0;
    if (!parse_value(fields[0], v)) {
      ADD_FAILURE() << "bad value " << fields[0];
      continue;
    }
    const std::string key = name + (has_labels ? "{" + labels + "}" : "");
    EXPECT_FALSE(ex.samples.contains(key)) << "sample given twice";
    if (types[family] == "counter") {
      EXPECT_GE(v, 0) << "negative counter";
    }
    ex.samples[key] = v;
  }
  // Histograms: cumulative buckets ending in +Inf equal to _count.
  for (const auto& [family, kind] : types) {
    if (kind != "histogram") continue;
    double previous = 0;
    bool inf = false;
    for (const auto& [key, v] : ex.samples) {
      if (!key.starts_with(family + "_bucket{")) continue;
      if (key == family + "_bucket{le=\"+Inf\"}") inf = true;
    }
    EXPECT_TRUE(inf) << family << " has no +Inf bucket";
    // Buckets in exposition order are checked through the text itself.
    std::istringstream again(text);
    while (std::getline(again, line)) {
      if (!line.starts_with(family + "_bucket{")) continue;
      double v = std::stod(line.substr(line.rfind(' ') + 1));
      EXPECT_GE(v, previous) << family << " buckets are not cumulative: " << line;
      previous = v;
    }
    EXPECT_EQ(previous, ex[family + "_count"]) << family << ": +Inf bucket != _count";
  }
  return ex;
}

// GET http://127.0.0.1:port/path; the body, or "" with a test failure.
std::string http_get(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    ADD_FAILURE() << "cannot connect to 127.0.0.1:" << port;
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  EXPECT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) response.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  EXPECT_TRUE(response.starts_with("HTTP/1.1 200")) << response.substr(0, 200);
  EXPECT_NE(response.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << response.substr(0, 300);
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// ------------------------------------------------ notification socket

// A unix datagram socket standing in for systemd's: every message the daemon
// sends, with whether the tree was mounted when it arrived.
class NotifySocket {
 public:
  NotifySocket(const std::string& path, const std::string& mountpoint) : path_(path), mountpoint_(mountpoint) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ADD_FAILURE() << "bind " << path;
    timeval tv{0, 100000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    thread_ = std::thread([this] {
      char buf[4096];
      while (!stop_) {
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) continue;
        const bool mounted = is_mounted(mountpoint_);
        std::lock_guard lock(mutex_);
        messages_.push_back({std::string(buf, static_cast<size_t>(n)), mounted});
      }
    });
  }
  ~NotifySocket() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  struct Message {
    std::string text;
    bool mounted;
  };
  std::vector<Message> messages() {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  int count(const std::string& needle) {
    int n = 0;
    for (const auto& m : messages()) n += m.text.find(needle) != std::string::npos;
    return n;
  }

 private:
  std::string path_, mountpoint_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<Message> messages_;
  std::thread thread_;
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = fixtures_dir();
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env")) << "no fixtures in " << fx_;
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    manifest_ = std::make_unique<Manifest>(fx_ + "/manifest.env");
    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    CommandResult r = cli("catalog import " + shell_quote(fx_ + "/repo"));
    ASSERT_EQ(r.status, 0) << r.output;
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
  }
  void TearDown() override {
    EXPECT_EQ(daemon_->stop(), "");
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    const std::string log = daemon_->log();
    for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
      EXPECT_EQ(log.find(bad), std::string::npos) << "daemon log holds \"" << bad << "\"";
    if (HasFailure()) std::cerr << "---- daemon log ----\n" << log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
  }
  CommandResult cli(const std::string& args) {
    return run(shell_quote(cli_binary()) + " " + args + " --catalog " + shell_quote(catalog_));
  }

  TempDir tmp_;
  std::string fx_, mnt_, catalog_;
  std::unique_ptr<Manifest> manifest_;
  std::unique_ptr<RestoreDaemon> daemon_;
};

TEST_F(ServiceTest, ReadyOnlyOnceMountedThenWatchdogPingsThenStopping) {
  NotifySocket sock(tmp_ / "notify.sock", mnt_);
  ::setenv("NOTIFY_SOCKET", (tmp_ / "notify.sock").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "1000000", 1);  // pings every 0.5 s
  ASSERT_EQ(daemon_->start({}), "");
  ASSERT_TRUE(wait_for([&] { return sock.count("READY=1") == 1; }, 10s)) << "no READY=1";
  for (const auto& m : sock.messages())
    if (m.text.find("READY=1") != std::string::npos) {
      EXPECT_TRUE(m.mounted) << "READY=1 before the mount was up";
    }
  EXPECT_EQ(sock.count("STATUS=serving " + mnt_), 1);
  // Several pings: each one follows a statfs the FUSE loop answered.
  EXPECT_TRUE(wait_for([&] { return sock.count("WATCHDOG=1") >= 4; }, 15s))
      << "WATCHDOG=1 pings: " << sock.count("WATCHDOG=1");
  EXPECT_EQ(daemon_->stop(), "");
  EXPECT_TRUE(wait_for([&] { return sock.count("STOPPING=1") == 1; }, 5s)) << "no STOPPING=1";
}

TEST_F(ServiceTest, NoWatchdogPingsWithoutWatchdogUsec) {
  NotifySocket sock(tmp_ / "notify.sock", mnt_);
  ::setenv("NOTIFY_SOCKET", (tmp_ / "notify.sock").c_str(), 1);
  ASSERT_EQ(daemon_->start({}), "");
  ASSERT_TRUE(wait_for([&] { return sock.count("READY=1") == 1; }, 10s)) << "no READY=1";
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(sock.count("WATCHDOG=1"), 0);
}

TEST_F(ServiceTest, MetricsFollowAttachReadAndDetach) {
  const int port = free_port();
  ASSERT_EQ(daemon_->start({"--metrics-listen", "127.0.0.1:" + std::to_string(port), "--idle-timeout", "2"}), "");
  const std::string full = (*manifest_)["FULL_ID"], broken = (*manifest_)["BROKEN_ID"];

  Exposition before = parse_exposition(http_get(port, "/metrics"));
  EXPECT_EQ(before["sendense_backups_attached"], 0);
  EXPECT_EQ(before["sendense_attaches_total{result=\"ok\"}"], 0);
  EXPECT_EQ(before["sendense_fuse_read_bytes_total{op=\"read\"}"], 0);
  EXPECT_GT(before["sendense_process_resident_memory_bytes"], 0);

  const std::string file = mnt_ + "/" + full + "/part1/docs/readme.txt";
  const std::string source = fx_ + "/src/docs/readme.txt";
  EXPECT_EQ(sha256_of(file), sha256_of(source));
  struct stat st {};
  ASSERT_EQ(::stat(source.c_str(), &st), 0);
  Exposition attached = parse_exposition(http_get(port, "/metrics"));
  EXPECT_EQ(attached["sendense_backups_attached"], 1);
  EXPECT_EQ(attached["sendense_attaches_total{result=\"ok\"}"], 1);
  EXPECT_EQ(attached["sendense_attach_duration_seconds_count"], 1);
  EXPECT_GE(attached["sendense_fuse_read_bytes_total{op=\"read\"}"], static_cast<double>(st.st_size));
  EXPECT_GE(attached["sendense_fuse_requests_total{op=\"read\"}"], 1);
  EXPECT_GE(attached["sendense_fuse_requests_total{op=\"lookup\"}"], 3);
  // The first OPEN is answered ENOSYS and the kernel sends no more, nor any
  // RELEASE (fuse/node_files.h): more files read, still one open.
  for (const char* name : {"docs/config.ini", "docs/readme.txt", "docs/config.ini"})
    EXPECT_EQ(sha256_of(mnt_ + "/" + full + "/part1/" + name), sha256_of(fx_ + "/src/" + name)) << name;
  attached = parse_exposition(http_get(port, "/metrics"));
  EXPECT_EQ(attached["sendense_fuse_requests_total{op=\"open\"}"], 1);
  EXPECT_EQ(attached["sendense_fuse_requests_total{op=\"release\"}"], 0);
  EXPECT_GE(attached["sendense_fuse_requests_total{op=\"read\"}"], 2);
  EXPECT_EQ(attached["sendense_detaches_total{reason=\"idle\"}"], 0);
  // `status` reads the catalog, not the endpoint.
  CommandResult status = cli("status");
  EXPECT_EQ(status.status, 0) << status.output;
  EXPECT_NE(status.output.find(full), std::string::npos) << status.output;

  // A damaged backup: an attach failure by cause.
  struct stat ignored {};
  const int rc = ::stat((mnt_ + "/" + broken + "/part1").c_str(), &ignored);
  const int err = errno;
  EXPECT_NE(rc, 0);
  EXPECT_EQ(err, EIO);
  // Idle detach after 2 s, and the catalog re-read every 2 s meanwhile.
  ASSERT_TRUE(wait_for(
      [&] {
        return parse_exposition(http_get(port, "/metrics"))["sendense_detaches_total{reason=\"idle\"}"] >= 1;
      },
      20s))
      << "no idle detach counted";
  Exposition after = parse_exposition(http_get(port, "/metrics"));
  EXPECT_EQ(after["sendense_backups_attached"], 0);
  EXPECT_GE(after["sendense_attaches_total{result=\"failed\"}"], 1);
  EXPECT_GE(after["sendense_failures_total{cause=\"attach_failed\"}"], 1);
  EXPECT_GE(after["sendense_catalog_reload_duration_seconds_count"], 1);
  EXPECT_EQ(after["sendense_fuse_read_bytes_total{op=\"read\"}"], attached["sendense_fuse_read_bytes_total{op=\"read\"}"]);
}

TEST_F(ServiceTest, MetricsParserRejectsWhatTheFormatForbids) {
  // The checker must be able to fail: each of these is one violation.
  for (const std::string bad : {
           "# TYPE a counter\na{x=\"1\"} 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n",  // family split
           "a 1\n",                                                                 // no TYPE
           "# TYPE a counter\na{x=1} 1\n",                                          // unquoted label
           "# TYPE a counter\na one\n",                                             // bad value
           "# TYPE a counter\na{x=\"1\",} 1\n",                                       // trailing comma
           "# TYPE a counter\n# TYPE a counter\na 1\n",                             // TYPE twice
           "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",  // not cumulative
       }) {
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter reporter(::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
      parse_exposition(bad);
    }
    EXPECT_GT(failures.size(), 0) << "accepted:\n" << bad;
  }
}

TEST_F(ServiceTest, TakenMetricsPortFailsTheStart) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  std::string err = daemon_->start({"--metrics-listen", "127.0.0.1:" + std::to_string(ntohs(addr.sin_port))});
  ::close(fd);
  EXPECT_NE(err.find("daemon exited before mounting (exit 1)"), std::string::npos) << err;
  EXPECT_NE(daemon_->log().find("cannot listen for metrics"), std::string::npos);
}

// The unit's CapabilityBoundingSet= and NoNewPrivileges= (no systemd here to
// apply them: setpriv does the same to the exec'd root process) leave enough
// for the FUSE mount and for the kernel backend's qemu-storage-daemon, loop
// devices and read-only mounts.
// Not a zombie: the daemon started through `sh -c ... &` is nobody's child here.
bool alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  return static_cast<bool>(in >> pid_field >> comm >> state) && state != "Z";
}

TEST_F(ServiceTest, TheUnitsCapabilitiesAreEnoughForBothBackends) {
  SENDENSE_REQUIRE_TOOL("setpriv");
  SENDENSE_REQUIRE_TOOL("qemu-storage-daemon");
  if (::geteuid() != 0) SENDENSE_SKIP("needs root (kernel backend)");
  std::string caps;  // setpriv's list: ",+sys_admin,+dac_override,..."
  bool no_new_privs = false;
  {
    std::istringstream unit(read_file(SENDENSE_UNIT_FILE));
    std::string line;
    while (std::getline(unit, line)) {
      if (line == "NoNewPrivileges=yes") no_new_privs = true;
      if (!line.starts_with("CapabilityBoundingSet=")) continue;
      std::istringstream words(line.substr(line.find('=') + 1));
      for (std::string cap; words >> cap;) {
        ASSERT_TRUE(cap.starts_with("CAP_")) << line;
        std::string name = cap.substr(4);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        caps += ",+" + name;
      }
    }
  }
  ASSERT_TRUE(no_new_privs) << "the unit lost NoNewPrivileges=yes";
  ASSERT_FALSE(caps.empty()) << "the unit lost CapabilityBoundingSet=";
  const std::string log = tmp_ / "setpriv.log";
  const std::string cmd = "setpriv --no-new-privs --inh-caps=-all --bounding-set=-all" + caps + " " +
                          shell_quote(restorefs_binary()) + " " + shell_quote(mnt_) +
                          " --config /dev/null --attach kernel -f --catalog " + shell_quote(catalog_) + " >" +
                          shell_quote(log) + " 2>&1 </dev/null & echo $!";
  CommandResult started = run(cmd);
  ASSERT_EQ(started.status, 0) << started.output;
  const pid_t pid = static_cast<pid_t>(std::stol(started.output));
  // A daemon that dies here leaves kernel-backend mounts and loop devices;
  // one more start on the same catalog releases them (start-up reconciles
  // dead runs), so later kernel tests find a clean host.
  struct Reaper {
    pid_t pid;
    std::string mnt, catalog, log;
    bool clean = false;
    ~Reaper() {
      ::kill(pid, SIGTERM);
      if (!wait_for([&] { return !alive(pid); }, 20s)) ::kill(pid, SIGKILL);
      if (clean) return;
      run(shell_quote(restorefs_binary()) + " --unmount " + shell_quote(mnt));
      if (is_mounted(mnt)) run("umount -l " + shell_quote(mnt));
      RestoreDaemon reconcile(mnt, catalog, log);
      if (reconcile.start({}).empty()) reconcile.stop();
    }
  } reaper{pid, mnt_, catalog_, tmp_ / "reconcile.log"};
  ASSERT_TRUE(wait_for([&] { return is_mounted(mnt_); }, 15s)) << read_file(log);
  const std::string full = (*manifest_)["FULL_ID"];
  EXPECT_EQ(sha256_of(mnt_ + "/" + full + "/part1/docs/readme.txt"), sha256_of(fx_ + "/src/docs/readme.txt"))
      << read_file(log);
  CommandResult status = cli("status");
  EXPECT_NE(status.output.find("[kernel]"), std::string::npos) << "not served by the kernel backend:\n"
                                                               << status.output << read_file(log);
  ::kill(pid, SIGTERM);
  EXPECT_TRUE(wait_for([&] { return !alive(pid); }, 20s)) << "still running after SIGTERM";
  // The holder kept the mount for the next start; --unmount takes it down
  // (the holder was started inside the same limits).
  run(shell_quote(restorefs_binary()) + " --unmount " + shell_quote(mnt_));
  EXPECT_TRUE(wait_for([&] { return !is_mounted(mnt_); }, 20s)) << "still mounted after --unmount";
  reaper.clean = !HasFailure();
  const std::string text = read_file(log);
  for (const char* bad : {"AddressSanitizer", "runtime error:", "Operation not permitted", "EPERM"})
    EXPECT_EQ(text.find(bad), std::string::npos) << bad << " in:\n" << text;
}

}  // namespace
}  // namespace sendense::test
