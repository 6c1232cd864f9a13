// sendense-restore-web: the customers' HTTP service over the restore tree.
// Started as root; forks the server child (HTTP, confined, see
// web/privileges.h) and stays the broker (the catalog, see web/broker.h).
// The broker exits non-zero when the server dies, so systemd restarts both.
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "web/api.h"
#include "web/broker.h"
#include "web/broker_client.h"
#include "web/jobs.h"
#include "web/privileges.h"
#include "web/rate_limit.h"
#include "web/tree_access.h"

namespace sendense::web {
namespace {

constexpr const char* kUsage =
    "usage: sendense-restore-web --mountpoint DIR --catalog FILE [--listen ADDR:PORT] [--user NAME]\n"
    "                            [--tls-cert FILE --tls-key FILE] [--archive-jobs-per-tenant N]\n"
    "                            [--tenant-bandwidth BYTES_PER_S] [--log-level debug|info|warn|error]\n"
    "Serves the restore tree to customers over HTTP (REST API under /api/v1 and a web page).\n"
    "Starts as root: the broker keeps the catalog, the server drops to --user (default sendense-web)\n"
    "in a chroot of the mount with CAP_DAC_READ_SEARCH only. --listen defaults to 127.0.0.1:8480;\n"
    "port 0 picks a free one (logged as web_listening port=N). --tenant-bandwidth 0 = unlimited.\n";

struct Options {
  std::string mountpoint = "/mnt/sendense/restore";
  std::string catalog = "/var/lib/sendense-restore/catalog.db";
  std::string listen = "127.0.0.1:8480";
  std::string user = "sendense-web";
  std::string tls_cert, tls_key;
  unsigned archive_jobs = 2;
  uint64_t bandwidth = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (a == "--version") {
      std::cout << "sendense-restore-web " << SENDENSE_VERSION << "\n";
      std::exit(0);
    }
    if (i + 1 >= argc) throw Error(EINVAL, "missing value for " + a);
    const std::string v = argv[++i];
    auto number = [&](const std::string& s) {
      if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) throw Error(EINVAL, "not a number: " + s, a);
      return std::stoull(s);
    };
    if (a == "--mountpoint") o.mountpoint = v;
    else if (a == "--catalog") o.catalog = v;
    else if (a == "--listen") o.listen = v;
    else if (a == "--user") o.user = v;
    else if (a == "--tls-cert") o.tls_cert = v;
    else if (a == "--tls-key") o.tls_key = v;
    else if (a == "--archive-jobs-per-tenant") o.archive_jobs = static_cast<unsigned>(number(v));
    else if (a == "--tenant-bandwidth") o.bandwidth = number(v);
    else if (a == "--log-level") {
      if (v == "debug") log::set_level(log::Level::debug);
      else if (v == "info") log::set_level(log::Level::info);
      else if (v == "warn") log::set_level(log::Level::warn);
      else if (v == "error") log::set_level(log::Level::error);
      else throw Error(EINVAL, "unknown log level " + v);
    } else {
      throw Error(EINVAL, "unknown option " + a);
    }
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) throw Error(EINVAL, "--tls-cert and --tls-key go together");
  if (o.archive_jobs == 0) throw Error(EINVAL, "--archive-jobs-per-tenant must be at least 1");
  if (o.listen.rfind(':') == std::string::npos) throw Error(EINVAL, "--listen wants ADDR:PORT", o.listen);
  return o;
}

// The server child: never returns.
[[noreturn]] void run_server(const Options& o, const TargetUser& user, int broker_fd) {
  try {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    ::signal(SIGPIPE, SIG_IGN);
    int root = ::open(o.mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) throw sys_error("open", o.mountpoint);
    TreeAccess tree{UniqueFd(root)};
    if (!tree.tree_is_up()) throw Error(ENOTCONN, "not a FUSE mount (is sendense-restorefs running?)", o.mountpoint);

    std::unique_ptr<httplib::Server> server;
    if (!o.tls_cert.empty()) {
      auto tls = std::make_unique<httplib::SSLServer>(o.tls_cert.c_str(), o.tls_key.c_str());
      if (!tls->is_valid()) throw Error(EINVAL, "cannot load the TLS certificate or key", o.tls_cert);
      server = std::move(tls);
    } else {
      server = std::make_unique<httplib::Server>();
    }
    BrokerClient broker(broker_fd);
    JobTable jobs(o.archive_jobs);
    Bandwidth bandwidth(o.bandwidth);
    Api api(tree, broker, jobs, bandwidth, !o.tls_cert.empty());
    api.install(*server);
    server->new_task_queue = [] { return new httplib::ThreadPool(32); };
    server->set_payload_max_length(64 * 1024);
    server->set_read_timeout(30, 0);
    server->set_write_timeout(60, 0);
    server->set_keep_alive_timeout(10);

    const auto colon = o.listen.rfind(':');
    std::string host = o.listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    int port = std::stoi(o.listen.substr(colon + 1));
    if (port == 0) port = server->bind_to_any_port(host);
    else if (!server->bind_to_port(host, port)) port = -1;
    if (port <= 0) throw Error(EADDRINUSE, "cannot listen", o.listen);

    confine_server(o.mountpoint, user);
    log::info("web_listening", {{"address", host}, {"port", std::to_string(port)},
                                {"tls", o.tls_cert.empty() ? "no" : "yes"}, {"uid", std::to_string(::getuid())}});
    server->listen_after_bind();
    ::_exit(0);
  } catch (const std::exception& e) {
    log::error("web_server_failed", {{"error", e.what()}});
    ::_exit(1);
  }
}

volatile sig_atomic_t g_stopping = 0;
volatile pid_t g_child = -1;

void on_stop(int) {
  g_stopping = 1;
  if (g_child > 0) ::kill(g_child, SIGTERM);
}

int main_impl(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (::geteuid() != 0) throw Error(EPERM, "must start as root (it confines its server itself)");
  const TargetUser user = lookup_user(o.user);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw sys_error("socketpair");
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const pid_t child = ::fork();
  if (child < 0) throw sys_error("fork");
  if (child == 0) {
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGINT, SIG_DFL);
    // Keep only stdio and the broker socket (as fd 3).
    if (::dup2(sv[1], 3) < 0) ::_exit(1);
    ::close_range(4, ~0U, 0);
    run_server(o, user, 3);
  }
  g_child = child;
  ::close(sv[1]);
  log::info("web_broker_started", {{"server_pid", std::to_string(child)}, {"catalog", o.catalog}});
  int rc = 1;
  try {
    Catalog catalog(o.catalog);
    serve_broker(sv[0], catalog);
  } catch (const std::exception& e) {
    log::error("web_broker_failed", {{"error", e.what()}});
    ::kill(child, SIGTERM);
  }
  int st = 0;
  while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  if (g_stopping) rc = 0;
  else log::error("web_server_exited", {{"status", WIFEXITED(st) ? std::to_string(WEXITSTATUS(st)) : "signal " + std::to_string(WTERMSIG(st))}});
  log::info("web_stopped", {{"exit", std::to_string(rc)}});
  return rc;
}

}  // namespace
}  // namespace sendense::web

int main(int argc, char** argv) {
  try {
    return sendense::web::main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "sendense-restore-web: " << e.what() << "\n";
    return 2;
  }
}
