// sendense-restore-web against the real daemon on a real FUSE mount
// (fixtures of tests/fixtures/make-fixtures.sh), read with the real curl,
// unzip, tar and rsync. Two tenants: acme owns VM "files", beta owns VM
// "web01"; tokens made with `sendense-restore token create`. The service runs
// as a child on 127.0.0.1:0 with --user nobody; its log's "web_listening
// port=N" line gives the port.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "catalog/catalog.h"
#include "tests/integration/daemon_harness.h"
#include "tests/support/test_support.h"

namespace sendense::test {
namespace {

using namespace std::chrono_literals;

// The file's bytes, "" when it does not exist (curl writes no body file for a 304).
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
std::string web_binary() { return build_dir() + "/sendense-restore-web"; }

// Percent-encodes a query value (keeps '/').
std::string enc(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      out += b;
    }
  }
  return out;
}

// The service as a child process, log in a file.
class WebService {
 public:
  explicit WebService(std::string log_path) : log_path_(std::move(log_path)) {}
  ~WebService() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string start(const std::vector<std::string>& args) {
    { std::ofstream touch(log_path_, std::ios::app); }
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<std::string> all = {web_binary()};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    bool up = wait_for(
        [&] {
          const std::string l = log();
          const size_t at = l.find(" web_listening ");
          const size_t port = at == std::string::npos ? at : l.find(" port=", at);
          if (port != std::string::npos) {
            port_ = std::atoi(l.c_str() + port + 6);
            return true;
          }
          return ::waitpid(pid_, nullptr, WNOHANG) == pid_;
        },
        15s);
    if (!up || port_ == 0) return "the service did not listen:\n" + log();
    return "";
  }
  // SIGTERM: the broker stops the server and exits 0.
  std::string stop() {
    if (pid_ <= 0) return "";
    ::kill(pid_, SIGTERM);
    int st = 0;
    if (!wait_for([&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; }, 10s)) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
      pid_ = -1;
      return "did not stop within 10 s";
    }
    pid_ = -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "" : "exit status " + std::to_string(st);
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  pid_t server_pid() const { return static_cast<pid_t>(std::atoi(run("pgrep -P " + std::to_string(pid_)).output.c_str())); }
  std::string log() const { return read_file(log_path_); }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct Http {
  int status = 0;
  std::string body;
  std::string headers;
  std::string header(const std::string& name) const {
    std::istringstream in(headers);
    std::string line;
    std::string lname = name;
    for (auto& ch : lname) ch = static_cast<char>(std::tolower(ch));
    while (std::getline(in, line)) {
      std::string l = line;
      for (auto& ch : l) ch = static_cast<char>(std::tolower(ch));
      if (l.rfind(lname + ":", 0) != 0) continue;
      std::string v = line.substr(name.size() + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
      return v;
    }
    return "";
  }
};

class WebTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fx_ = fixtures_dir();
    if (file_exists(fx_ + "/SKIPPED")) SENDENSE_SKIP("fixtures were not built: " << read_file(fx_ + "/SKIPPED"));
    ASSERT_TRUE(file_exists(fx_ + "/manifest.env")) << "no fixtures in " << fx_ << ": run `ctest -R make_fixtures`";
    if (!file_exists("/dev/fuse")) SENDENSE_SKIP("no /dev/fuse");
    if (::geteuid() != 0) SENDENSE_SKIP("the service starts as root (chroot, setuid)");
    for (const char* tool : {"curl", "unzip", "tar", "zstd", "rsync"}) SENDENSE_REQUIRE_TOOL(tool);
    ASSERT_TRUE(file_exists(web_binary())) << web_binary();
    Manifest manifest(fx_ + "/manifest.env");
    files_ = manifest["FILES_ID"];
    full_ = manifest["FULL_ID"];
    mnt_ = tmp_ / "mnt";
    catalog_ = tmp_ / "catalog.db";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    for (const std::string& cmd : std::vector<std::string>{"catalog import " + q(fx_ + "/repo"), std::string("tenant add acme --uid 20101 --gid 20101"),
                                   std::string("tenant assign acme --vm files"), std::string("tenant add beta"),
                                   std::string("tenant assign beta --vm web01")}) {
      CommandResult r = cli(cmd);
      ASSERT_EQ(r.status, 0) << cmd << ": " << r.output;
    }
    acme_ = token("--tenant acme");
    beta_ = token("--tenant beta");
    operator_ = token("--operator");
    daemon_ = std::make_unique<RestoreDaemon>(mnt_, catalog_, tmp_ / "daemon.log");
    ASSERT_EQ(daemon_->start({}), "");
    ASSERT_TRUE(wait_for([&] { return is_mounted(mnt_ + "/tenants/acme") && is_mounted(mnt_ + "/tenants/beta"); }, 10s))
        << "the tenants' views did not appear";
  }

  void TearDown() override {
    if (web_) {
      EXPECT_EQ(web_->stop(), "") << "stopping the service";
      const std::string log = web_->log();
      for (const char* bad : {"AddressSanitizer", "runtime error:", "LeakSanitizer"})
        EXPECT_EQ(log.find(bad), std::string::npos) << "service log holds " << bad << ":\n" << log;
      if (HasFailure()) std::cerr << "---- service log ----\n" << log;
      web_.reset();
    }
    if (daemon_) {
      EXPECT_EQ(daemon_->stop(), "");
      EXPECT_FALSE(is_mounted(mnt_));
    }
  }

  CommandResult cli(const std::string& args) {
    return run(q(cli_binary()) + " " + args + " --catalog " + q(catalog_));
  }
  std::string token(const std::string& who) {
    CommandResult r = run(q(cli_binary()) + " token create " + who + " --catalog " + q(catalog_) + " 2>/dev/null");
    EXPECT_EQ(r.status, 0) << r.output;
    return trim(r.output);
  }

  void start_web(std::vector<std::string> extra = {}) {
    web_ = std::make_unique<WebService>(tmp_ / "web.log");
    std::vector<std::string> args = {"--mountpoint", mnt_, "--catalog", catalog_, "--listen", "127.0.0.1:0",
                                     "--user", "nobody", "--log-level", "debug"};
    args.insert(args.end(), extra.begin(), extra.end());
    ASSERT_EQ(web_->start(args), "");
    base_ = "http://127.0.0.1:" + std::to_string(web_->port());
  }

  // GET (or `extra` curl options) of base_ + `target` as it is written.
  Http get(const std::string& target, const std::string& tok, const std::string& extra = "") {
    const std::string body = tmp_ / "body", hdr = tmp_ / "headers";
    std::string auth = tok.empty() ? "" : "-H " + q("Authorization: Bearer " + tok) + " ";
    CommandResult r = run("curl -sS -g --path-as-is -o " + q(body) + " -D " + q(hdr) + " -w '%{http_code}' " + auth + extra +
                          " " + q(base_ + target));
    Http h;
    h.status = std::atoi(r.output.c_str());
    h.body = slurp(body);
    h.headers = slurp(hdr);
    ::unlink(body.c_str());
    return h;
  }
  std::string api(const std::string& id, const std::string& what, const std::string& path) {
    return "/api/v1/backups/" + id + "/" + what + "?path=" + enc(path);
  }
  std::string acme_tree() const { return mnt_ + "/tenants/acme/" + files_; }

  std::string fx_, files_, full_, mnt_, catalog_, base_;
  std::string acme_, beta_, operator_;
  TempDir tmp_;
  std::unique_ptr<RestoreDaemon> daemon_;
  std::unique_ptr<WebService> web_;
};

TEST_F(WebTest, ListingAndDownloadsAreTheTreesBytes) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  Http who = get("/api/v1/whoami", acme_);
  ASSERT_EQ(who.status, 200) << who.body;
  auto w = nlohmann::json::parse(who.body);
  EXPECT_EQ(w["tenant"], "acme");
  EXPECT_EQ(w["operator"], false);
  // Security headers on every response.
  EXPECT_EQ(who.header("Content-Security-Policy"), "default-src 'self'");
  EXPECT_EQ(who.header("X-Content-Type-Options"), "nosniff");

  Http list = get("/api/v1/backups", acme_);
  ASSERT_EQ(list.status, 200);
  auto backups = nlohmann::json::parse(list.body)["backups"];
  ASSERT_EQ(backups.size(), 1u) << list.body;
  EXPECT_EQ(backups[0]["id"], files_);
  EXPECT_EQ(nlohmann::json::parse(get("/api/v1/backups?vm=web01", beta_).body)["backups"].size(), 2u);

  // Every folder's listing is the tree's (names, types, sizes, modes, targets).
  for (const std::string& folder : std::vector<std::string>{std::string("/disk"), std::string("/disk/sub"), std::string("/disk/sub/inner")}) {
    Http h = get(api(files_, "files", folder), acme_);
    ASSERT_EQ(h.status, 200) << folder << ": " << h.body;
    std::string ours;
    const auto listing = nlohmann::json::parse(h.body);
    for (const auto& e : listing["entries"]) {
      ours += e["name"].get<std::string>() + " " + (e["type"] == "symlink" ? std::string("l") : e["type"].get<std::string>().substr(0, 1)) + " " +
              e["mode"].get<std::string>().substr(1) + " " + std::to_string(e["size"].get<uint64_t>()) + " " +
              e.value("target", "") + "\n";
    }
    std::string theirs = run_ok("cd " + q(acme_tree() + folder) +
                                " && find . -mindepth 1 -maxdepth 1 -printf '%P %y %m %s %l\\n' | LC_ALL=C sort");
    // find prints %m without leading zeros ("440"): ours is "0440" minus the first digit.
    EXPECT_EQ(ours, theirs) << folder;
  }
  // Paging.
  auto page = nlohmann::json::parse(get(api(files_, "files", "/disk/sub") + "&offset=1&limit=2", acme_).body);
  EXPECT_EQ(page["entries"].size(), 2u);
  EXPECT_EQ(page["total"], 5);

  // Every file byte-identical.
  for (const std::string& f : std::vector<std::string>{"/disk/README", "/disk/random-2M.bin", "/disk/sub/holes", "/disk/sub/blob.bin",
                               "/disk/sub/inner/note.txt"}) {
    Http h = get(api(files_, "download", f), acme_);
    ASSERT_EQ(h.status, 200) << f;
    EXPECT_EQ(h.body, read_file(acme_tree() + f)) << f;
    EXPECT_EQ(h.header("Content-Length"), std::to_string(h.body.size()));
    EXPECT_NE(h.header("Content-Disposition").find("filename*=UTF-8''"), std::string::npos);
  }
  Http st = get(api(files_, "stat", "/disk/sub/link-to-readme"), acme_);
  ASSERT_EQ(st.status, 200) << st.body;
  EXPECT_EQ(nlohmann::json::parse(st.body)["target"], "../README");
  // A folder or a symlink is not a download.
  EXPECT_EQ(get(api(files_, "download", "/disk/sub"), acme_).status, 400);
  EXPECT_EQ(get(api(files_, "download", "/disk/sub/link-to-readme"), acme_).status, 400);
}

TEST_F(WebTest, RangesAndEtags) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  const std::string file = acme_tree() + "/disk/random-2M.bin";
  const std::string whole = read_file(file);
  const std::string url = api(files_, "download", "/disk/random-2M.bin");
  Http r = get(url, acme_, "-r 1000-1999");
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, whole.substr(1000, 1000));
  EXPECT_EQ(r.header("Content-Range"), "bytes 1000-1999/" + std::to_string(whole.size()));
  Http tail = get(url, acme_, "-r -100");
  EXPECT_EQ(tail.status, 206);
  EXPECT_EQ(tail.body, whole.substr(whole.size() - 100));
  Http open_end = get(url, acme_, "-r 2097000-");
  EXPECT_EQ(open_end.body, whole.substr(2097000));
  Http bad = get(url, acme_, "-r 99999999-");
  EXPECT_EQ(bad.status, 416);
  EXPECT_EQ(bad.header("Content-Range"), "bytes */" + std::to_string(whole.size()));

  Http full = get(url, acme_);
  const std::string etag = full.header("ETag");
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(get(url, acme_, "-H " + q("If-None-Match: " + etag)).status, 304);
  EXPECT_EQ(get(url, acme_, "-H " + q("If-None-Match: \"other\"")).status, 200);
}

TEST_F(WebTest, ArchivesExtractToTheTree) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  for (const std::string& format : std::vector<std::string>{"zip", "tar", "tar.zst"}) {
    SCOPED_TRACE(format);
    const std::string out = tmp_ / ("x-" + format);
    run_ok("mkdir -p " + q(out));
    const std::string file = out + "/archive";
    Http h = get(api(files_, "archive", "/disk") + "&format=" + format, acme_, "");
    ASSERT_EQ(h.status, 200) << h.body.substr(0, 200);
    write_file(file, h.body);
    EXPECT_FALSE(h.header("X-Sendense-Job").empty());
    EXPECT_EQ(h.header("X-Sendense-Total-Bytes"), trim(run_ok("find " + q(acme_tree() + "/disk") +
                                                              " -type f -printf '%s\\n' | paste -sd+ | bc")));
    if (format == "zip") {
      run_ok("cd " + q(out) + " && unzip -q archive");
    } else if (format == "tar") {
      run_ok("tar -xf " + q(file) + " -C " + q(out));
    } else {
      run_ok("tar --zstd -xf " + q(file) + " -C " + q(out));
    }
    CommandResult diff = run("rsync -n -i -rl --checksum --delete " + q(out + "/disk/") + " " + q(acme_tree() + "/disk/"));
    EXPECT_EQ(diff.status, 0) << diff.output;
    EXPECT_EQ(diff.output, "") << "the extracted archive differs from the tree";
    if (format != "zip") {  // tar keeps modes and times (zip: unzip applies its own umask)
      CommandResult meta = run("rsync -n -i -rlpt --checksum --modify-window=0 " + q(out + "/disk/") + " " + q(acme_tree() + "/disk/"));
      EXPECT_EQ(meta.output, "") << "modes or times differ";
    }
    auto job = nlohmann::json::parse(get("/api/v1/jobs/" + h.header("X-Sendense-Job"), acme_).body);
    EXPECT_EQ(job["state"], "done") << job.dump();
    EXPECT_EQ(job["files_done"], job["files_total"]);
  }
  // The page names its job (job=) to poll before the headers come; an id in
  // use, even another tenant's, or a malformed one is replaced, never shared.
  const std::string proposed = "page-job_0123456789";
  Http named = get(api(files_, "archive", "/disk") + "&format=tar&job=" + proposed, acme_, "");
  ASSERT_EQ(named.status, 200);
  EXPECT_EQ(named.header("X-Sendense-Job"), proposed);
  EXPECT_EQ(nlohmann::json::parse(get("/api/v1/jobs/" + proposed, acme_).body)["state"], "done");
  Http again = get(api(files_, "archive", "/disk") + "&format=tar&job=" + proposed, acme_, "");
  ASSERT_EQ(again.status, 200);
  EXPECT_NE(again.header("X-Sendense-Job"), proposed);
  Http bad = get(api(files_, "archive", "/disk") + "&format=tar&job=short", acme_, "");
  ASSERT_EQ(bad.status, 200);
  EXPECT_EQ(bad.header("X-Sendense-Job").rfind("job-", 0), 0u) << bad.header("X-Sendense-Job");
}

TEST_F(WebTest, ATenantAddedWhileRunningIsUnavailableUntilItsViewIsMountedNeverNotFound) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  const std::string db = Manifest(fx_ + "/manifest.env")["DB_ID"];
  for (const char* cmd : {"tenant add gamma", "tenant assign gamma --vm db01"}) ASSERT_EQ(cli(cmd).status, 0) << cmd;
  const std::string gamma = token("--tenant gamma");
  // Before the daemon's next refresh mounts tenants/gamma the folder is the
  // operator tree's empty placeholder: "not yet" (503), never "no such backup".
  int unavailable = 0;
  bool served = false;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (!served && std::chrono::steady_clock::now() < deadline) {
    Http h = get("/api/v1/backups/" + db + "/files?path=/", gamma);
    if (h.status == 200) served = true;
    else if (h.status == 503) ++unavailable;
    else FAIL() << "a tenant whose view is being mounted got " << h.status << ": " << h.body;
  }
  EXPECT_TRUE(served) << "the new tenant's backup was not served within 15 s";
  std::cerr << "503 answers before the view was mounted: " << unavailable << "\n";
}

TEST_F(WebTest, TlsWhenGivenACertificate) {
  SENDENSE_REQUIRE_TOOL("openssl");
  const std::string cert = tmp_ / "cert.pem", key = tmp_ / "key.pem";
  run_ok("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
         "-keyout " + q(key) + " -out " + q(cert) + " 2>&1");
  ASSERT_NO_FATAL_FAILURE(start_web({"--tls-cert", cert, "--tls-key", key}));
  base_ = "https://127.0.0.1:" + std::to_string(web_->port());
  // Plain HTTP on the TLS port gets nothing.
  CommandResult plain = run("curl -sS -o /dev/null -w '%{http_code}' " +
                            q("http://127.0.0.1:" + std::to_string(web_->port()) + "/api/v1/whoami"));
  EXPECT_NE(trim(plain.output), "200") << plain.output;
  Http who = get("/api/v1/whoami", acme_, "--cacert " + q(cert));
  ASSERT_EQ(who.status, 200) << who.body;
  EXPECT_EQ(nlohmann::json::parse(who.body)["tenant"], "acme");
  Http file = get(api(files_, "download", "/disk/README"), acme_, "--cacert " + q(cert));
  ASSERT_EQ(file.status, 200);
  EXPECT_EQ(file.body, read_file(acme_tree() + "/disk/README"));
  // The session cookie is Secure under TLS.
  Http session = get("/api/v1/session", "",
                     "--cacert " + q(cert) + " -X POST -H 'Content-Type: application/json' -d " +
                         q(nlohmann::json{{"token", acme_}}.dump()));
  EXPECT_EQ(session.status, 204) << session.body;
  EXPECT_NE(session.header("Set-Cookie").find("; Secure"), std::string::npos) << session.headers;
  EXPECT_NE(session.header("Set-Cookie").find("HttpOnly"), std::string::npos) << session.headers;
}

TEST_F(WebTest, TenantsCannotSeeEachOthersBackups) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  // By id: beta's backup through acme's token, every endpoint.
  for (const std::string& what : std::vector<std::string>{"files", "stat", "download", "archive"}) {
    Http h = get(api(full_, what, what == "download" ? "/part1/docs/readme.txt" : "/"), acme_);
    EXPECT_EQ(h.status, 404) << what << ": " << h.body;
    EXPECT_EQ(nlohmann::json::parse(h.body)["code"], "not_found");
  }
  // A missing id answers the same body.
  EXPECT_EQ(get(api("backup-nope", "files", "/"), acme_).body, get(api(full_, "files", "/"), acme_).body);
  // By path and by guessed names.
  for (const std::string& id : std::vector<std::string>{"by-vm", "tenants", "..", ".", "%2e%2e", "..%2f" + full_, "%2e%2e%2ftenants%2fbeta%2f" + full_}) {
    Http h = get("/api/v1/backups/" + id + "/files?path=/", acme_);
    EXPECT_EQ(h.status, 404) << id << ": " << h.body;
  }
  for (const std::string& p : std::vector<std::string>{"/../" + full_ + "/part1", "/../../beta/" + full_, "../../../" + full_ + "/part1"}) {
    Http h = get(api(files_, "files", p), acme_);
    EXPECT_EQ(h.status, 404) << p << ": " << h.body;
  }
  // The other way round, and the operator sees both.
  EXPECT_EQ(get(api(files_, "files", "/"), beta_).status, 404);
  EXPECT_EQ(get(api(files_, "files", "/disk"), operator_).status, 200);
  EXPECT_EQ(get(api(full_, "files", "/part1"), operator_).status, 200);
  EXPECT_EQ(nlohmann::json::parse(get("/api/v1/whoami", operator_).body)["operator"], true);
}

TEST_F(WebTest, PathTraversalNeverLeavesTheTenantsFolder) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  const std::string passwd = read_file("/etc/passwd");

  // (backup, raw query value) as a client could send it.
  std::vector<std::pair<std::string, std::string>> attempts;
  for (const std::string& raw : std::vector<std::string>{"..", "../..", "../../..", "/../../../etc/passwd", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                "disk%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/etc/passwd", "%2fetc%2fpasswd", "//etc/passwd",
                                "disk/%00/../../etc/passwd", "disk/README%00", "%00", "disk/sub/link-to-readme",
                                "disk/sub/link-to-readme/..", "disk/sub/../../../../etc/passwd", "/proc/self/root/etc/passwd",
                                "..%5c..%5cetc%5cpasswd"})
    attempts.push_back({files_, raw});
  // beta's web01: guest symlinks to /etc/hostname (absolute) and ../docs.
  std::vector<std::pair<std::string, std::string>> beta_attempts;
  for (const std::string& raw : std::vector<std::string>{"part1/links/absolute", "part1/links/to-dir/readme.txt", "part1/links/to-dir",
                                "part1/links/relative", "part1/links/absolute/..", "part1/links/long"})
    beta_attempts.push_back({full_, raw});
  auto check = [&](const std::string& tok, const std::string& id, const std::string& raw) {
    for (const std::string& what : std::vector<std::string>{"files", "stat", "download", "archive"}) {
      Http h = get("/api/v1/backups/" + id + "/" + what + "?path=" + raw, tok);
      SCOPED_TRACE(what + " " + raw);
      EXPECT_TRUE(h.status == 400 || h.status == 404 || (what == "stat" && h.status == 200) ||
                  (what == "files" && raw.find("..") == std::string::npos && h.status == 200))
          << h.status << " " << h.body.substr(0, 200);
      EXPECT_EQ(h.body.find("root:x:0:0"), std::string::npos) << "/etc/passwd leaked";
      EXPECT_FALSE(what == "download" && h.status == 200) << "a download through a traversal attempt";
      EXPECT_FALSE(what == "archive" && h.status == 200) << "an archive through a traversal attempt";
    }
  };
  for (const auto& [id, raw] : attempts) check(acme_, id, raw);
  for (const auto& [id, raw] : beta_attempts) check(beta_, id, raw);
  // A symlink is listed with its target, never followed.
  auto links = nlohmann::json::parse(get(api(full_, "files", "/part1/links"), beta_).body);
  bool saw_absolute = false;
  for (const auto& e : links["entries"])
    if (e["name"] == "absolute") {
      saw_absolute = true;
      EXPECT_EQ(e["type"], "symlink");
      EXPECT_EQ(e["target"], "/etc/hostname");
    }
  EXPECT_TRUE(saw_absolute) << links.dump();
  // Paths that stay inside still work (".." that does not leave).
  Http inside = get(api(files_, "download", "/disk/sub/../README"), acme_);
  EXPECT_EQ(inside.status, 200);
  EXPECT_EQ(inside.body, read_file(acme_tree() + "/disk/README"));
  (void)passwd;
}

TEST_F(WebTest, TokensAreCheckedOnEveryRequest) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  const std::string url = api(files_, "files", "/disk");
  EXPECT_EQ(get(url, "").status, 401);
  EXPECT_EQ(nlohmann::json::parse(get(url, "").body)["code"], "unauthorized");
  EXPECT_EQ(get(url, "not-a-token").status, 401);
  EXPECT_EQ(get(url, acme_ + "x").status, 401);
  EXPECT_EQ(get(url, acme_).status, 200);
  // The cookie session.
  Http s = get("/api/v1/session", "", "-X POST -H 'Content-Type: application/json' --data " +
                                          q(nlohmann::json{{"token", acme_}}.dump()));
  EXPECT_EQ(s.status, 204);
  EXPECT_NE(s.header("Set-Cookie").find("HttpOnly; SameSite=Strict"), std::string::npos) << s.headers;
  EXPECT_EQ(get(url, "", "-H " + q("Cookie: sdr_token=" + acme_)).status, 200);
  // Revoked: refused at once, by the running service.
  auto tokens = nlohmann::json::parse(cli("token list --json").output);
  std::string id = nlohmann::json::parse(get("/api/v1/whoami", acme_).body)["token_id"];
  ASSERT_EQ(cli("token revoke " + id).status, 0);
  EXPECT_EQ(get(url, acme_).status, 401);
  EXPECT_EQ(get(url, "", "-H " + q("Cookie: sdr_token=" + acme_)).status, 401);
  EXPECT_EQ(get(url, beta_).status, 404);  // beta's token still works (and acme's backup is not beta's)
}

TEST_F(WebTest, ArchiveJobLimitAndAClientThatGoesAwayCancelsTheJob) {
  // 300 kB/s: the 4 MB folder takes ~14 s, plenty of time to look at it.
  ASSERT_NO_FATAL_FAILURE(start_web({"--archive-jobs-per-tenant", "1", "--tenant-bandwidth", "300000"}));
  const std::string hdr = tmp_ / "slow.headers";
  const std::string url = base_ + api(files_, "archive", "/disk") + "&format=tar";
  const std::string pid = trim(run("curl -sS -o /dev/null -D " + q(hdr) + " -H " + q("Authorization: Bearer " + acme_) +
                                   " " + q(url) + " >/dev/null 2>&1 & echo $!").output);
  ASSERT_FALSE(pid.empty());
  ASSERT_TRUE(wait_for([&] { return slurp(hdr).find("X-Sendense-Job") != std::string::npos; }, 10s))
      << slurp(hdr);
  Http slow;
  slow.headers = slurp(hdr);
  const std::string job = slow.header("X-Sendense-Job");
  ASSERT_EQ(job.rfind("job-", 0), 0u) << slow.headers;
  // The limit: acme's second archive is refused, beta's is not limited by acme's.
  Http second = get(api(files_, "archive", "/disk"), acme_);
  EXPECT_EQ(second.status, 429);
  EXPECT_EQ(nlohmann::json::parse(second.body)["code"], "too_many_jobs");
  EXPECT_EQ(get(api(full_, "archive", "/part2") + "&format=tar", beta_).status, 200);
  auto running = nlohmann::json::parse(get("/api/v1/jobs/" + job, acme_).body);
  EXPECT_EQ(running["state"], "running") << running.dump();
  EXPECT_GT(running["bytes_total"].get<uint64_t>(), 4000000u);
  // Another tenant cannot see it.
  EXPECT_EQ(get("/api/v1/jobs/" + job, beta_).status, 404);
  // The client goes away mid-archive.
  run_ok("kill " + pid);
  nlohmann::json after;
  EXPECT_TRUE(wait_for(
      [&] {
        after = nlohmann::json::parse(get("/api/v1/jobs/" + job, acme_).body);
        return after["state"] != "running";
      },
      15s))
      << "the job is still running after its client went away: " << after.dump();
  EXPECT_EQ(after["state"], "cancelled") << after.dump();
  EXPECT_FALSE(after["ended_at"].is_null());
  EXPECT_LT(after["bytes_done"].get<uint64_t>(), after["bytes_total"].get<uint64_t>());
  // Its slot is free again: a new archive starts (cut short by curl).
  Http again = get(api(files_, "archive", "/disk/sub/inner"), acme_);
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_TRUE(wait_for([&] { return count_events(web_->log(), "web_audit", {{"action", "archive"}, {"result", "client-closed"}}) == 1; }, 5s))
      << web_->log();
}

TEST_F(WebTest, ServerProcessIsConfinedAndEveryDownloadIsAudited) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  const pid_t server = web_->server_pid();
  ASSERT_GT(server, 0);
  const std::string status = read_file("/proc/" + std::to_string(server) + "/status");
  const size_t uid_at = status.find("Uid:");
  ASSERT_NE(uid_at, std::string::npos) << status;
  std::istringstream uids(status.substr(uid_at + 4, status.find('\n', uid_at) - uid_at - 4));
  int n = 0;
  for (std::string u; uids >> u; ++n) EXPECT_NE(u, "0") << status;
  EXPECT_EQ(n, 4) << status;
  EXPECT_NE(status.find("CapEff:\t0000000000000004"), std::string::npos) << status;
  EXPECT_NE(status.find("CapPrm:\t0000000000000004"), std::string::npos) << status;
  EXPECT_NE(status.find("CapBnd:\t0000000000000004"), std::string::npos) << status;
  EXPECT_NE(status.find("NoNewPrivs:\t1"), std::string::npos) << status;
  EXPECT_NE(status.find("Seccomp:\t2"), std::string::npos) << status;
  // Its root is the mount: no host file in sight.
  EXPECT_EQ(trim(run("stat -L -c %d:%i /proc/" + std::to_string(server) + "/root").output),
            trim(run("stat -c %d:%i " + q(mnt_)).output));

  ASSERT_EQ(get(api(files_, "download", "/disk/README"), acme_).status, 200);
  ASSERT_EQ(get(api(files_, "archive", "/disk/sub") + "&format=zip", acme_).status, 200);
  ASSERT_TRUE(wait_for([&] { return count_events(web_->log(), "web_audit") == 2; }, 5s)) << web_->log();
  EXPECT_EQ(count_events(web_->log(), "web_audit", {{"tenant", "acme"}, {"action", "download"}, {"path", "/disk/README"},
                                                   {"bytes", "18"}, {"result", "ok"}}), 1) << web_->log();
  Catalog catalog(catalog_);
  auto rows = catalog.list_audit(10);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].action, "archive");
  EXPECT_EQ(rows[0].result, "ok");
  EXPECT_EQ(rows[1].action, "download");
  EXPECT_EQ(rows[1].tenant, "acme");
  EXPECT_EQ(rows[1].backup_id, files_);
  EXPECT_EQ(rows[1].bytes, 18u);
  EXPECT_EQ(rows[1].token_id, nlohmann::json::parse(get("/api/v1/whoami", acme_).body)["token_id"]);
}

TEST_F(WebTest, AttachAndDetachThroughTheApi) {
  ASSERT_NO_FATAL_FAILURE(start_web());
  Http h = get("/api/v1/restore/mount", acme_, "-X POST --data " + q(nlohmann::json{{"backup_id", files_}}.dump()));
  ASSERT_EQ(h.status, 200) << h.body;
  auto m = nlohmann::json::parse(h.body);
  EXPECT_EQ(m["mount_path"], "/tenants/acme/" + files_);
  EXPECT_EQ(m["status"], "mounted");
  auto list = nlohmann::json::parse(get("/api/v1/restore", acme_).body)["mounts"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(get("/api/v1/restore", beta_).body)["mounts"].size(), 0u);
  EXPECT_EQ(get("/api/v1/restore/" + m["mount_id"].get<std::string>(), beta_, "-X DELETE").status, 404);
  EXPECT_EQ(get("/api/v1/backups/" + full_ + "/files?path=/", acme_).status, 404);
  EXPECT_EQ(get("/api/v1/restore/mount", acme_, "-X POST --data " + q(nlohmann::json{{"backup_id", full_}}.dump())).status, 404);
  EXPECT_EQ(get("/api/v1/restore/" + m["mount_id"].get<std::string>(), acme_, "-X DELETE").status, 204);
  EXPECT_TRUE(wait_for([&] { return nlohmann::json::parse(get("/api/v1/restore", acme_).body)["mounts"].empty(); }, 10s))
      << "the detach request was not carried out";
}

}  // namespace
}  // namespace sendense::test
