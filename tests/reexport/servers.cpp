#include "tests/reexport/servers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <fstream>
#include <sstream>
#include <thread>

namespace sendense::test::reexport {

namespace {

using namespace std::chrono_literals;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail_lines(const std::string& s, int lines) {
  size_t pos = s.size();
  for (int i = 0; i <= lines && pos != std::string::npos && pos > 0; ++i) pos = s.rfind('\n', pos - 1);
  return pos == std::string::npos || pos == 0 ? s : s.substr(pos + 1);
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

void mkdirs(const std::string& path) { run("mkdir -p " + shell_quote(path)); }

}  // namespace

int free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

bool tcp_listening(int port) {
  char want_lo[32], want_any[32];
  std::snprintf(want_lo, sizeof want_lo, "0100007F:%04X", port);
  std::snprintf(want_any, sizeof want_any, "00000000:%04X", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string slot, local, remote, state;
      ls >> slot >> local >> remote >> state;
      if (state != "0A") continue;  // LISTEN
      if (local == want_lo || local == want_any) return true;
      // tcp6: "::" or "::1" with the port after the last ':'
      auto colon = local.rfind(':');
      if (std::string(table) == "/proc/net/tcp6" && colon != std::string::npos &&
          local.substr(colon + 1) == std::string(want_lo).substr(9))
        return true;
    }
  }
  return false;
}

std::vector<std::string> open_fds(pid_t pid) {
  std::vector<std::string> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char buf[4096];
    ssize_t n = ::readlink((dir + "/" + e->d_name).c_str(), buf, sizeof buf);
    if (n > 0) out.emplace_back(buf, static_cast<size_t>(n));
  }
  ::closedir(d);
  return out;
}

size_t fds_under(pid_t pid, const std::string& dir) {
  size_t n = 0;
  for (const auto& target : open_fds(pid))
    if (target == dir || target.rfind(dir + "/", 0) == 0) ++n;
  return n;
}

std::vector<pid_t> process_group(pid_t pgid) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0) continue;
    if (::getpgid(static_cast<pid_t>(pid)) == pgid) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

std::vector<pid_t> server_processes(pid_t pid) {
  std::vector<pid_t> out = process_group(pid);
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long p = std::strtol(e->d_name, &end, 10);
    if (!end || *end || p <= 0) continue;
    std::ifstream stat("/proc/" + std::string(e->d_name) + "/stat");
    std::string line;
    std::getline(stat, line);
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after ')'.
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string state;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid == pid && std::find(out.begin(), out.end(), static_cast<pid_t>(p)) == out.end())
      out.push_back(static_cast<pid_t>(p));
  }
  ::closedir(d);
  return out;
}

// ------------------------------------------------------------ ServerProcess

std::string ServerProcess::start(const std::vector<std::string>& argv, int port, std::chrono::seconds timeout) {
  if (pid_ > 0) return name_ + " already running";
  int fd = ::open(log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return "cannot open " + log_path_;
  std::vector<std::string> args = argv;
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return "fork failed";
  }
  if (pid == 0) {
    ::setsid();  // a process group of its own: stop() signals all of it
    // And it dies with the test: a test killed by a sanitizer (no destructors
    // run) must not leave a server holding descriptors into a mount.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    std::vector<char*> cargv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execvp(cargv[0], cargv.data());
    std::perror(("execvp " + args[0]).c_str());
    ::_exit(127);
  }
  ::close(fd);
  pid_ = pid;
  int st = 0;
  bool exited = false;
  bool up = wait_until(
      [&] {
        if (::waitpid(pid_, &st, WNOHANG) == pid_) return exited = true;
        return tcp_listening(port);
      },
      timeout);
  if (exited) {
    pid_ = -1;
    ::kill(-pid, SIGKILL);  // whatever it forked
    return name_ + " exited before listening on port " + std::to_string(port) + " (status " + std::to_string(st) + ")";
  }
  if (!up) {
    stop(2s);
    return name_ + " did not listen on 127.0.0.1:" + std::to_string(port) + " within " +
           std::to_string(timeout.count()) + " s";
  }
  return {};
}

bool ServerProcess::alive() {
  if (pid_ <= 0) return false;
  int st = 0;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) {
    ::kill(-pid_, SIGKILL);
    pid_ = -1;
    return false;
  }
  return true;
}

std::string ServerProcess::stop(std::chrono::seconds grace) {
  if (pid_ <= 0) return {};
  const pid_t pid = pid_;
  pid_ = -1;
  std::string problem;
  int st = 0;
  if (::waitpid(pid, &st, WNOHANG) == pid) {
    problem = name_ + " had already exited (status " + std::to_string(st) + ")";
  } else {
    ::kill(-pid, SIGTERM);
    if (!wait_until([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, grace)) {
      problem = name_ + " did not exit within " + std::to_string(grace.count()) + " s of SIGTERM";
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &st, 0);
    }
  }
  // The leader is gone; children left in its group are killed too.
  if (!process_group(pid).empty()) {
    ::kill(-pid, SIGKILL);
    wait_until([&] { return process_group(pid).empty(); }, 5s);
  }
  return problem;
}

// ------------------------------------------------------------------ Ganesha

std::string ganesha_export_block(const GaneshaExport& e) {
  std::ostringstream o;
  o << "EXPORT {\n"
    << "  Export_Id = " << e.id << ";\n"
    << "  Path = \"" << e.path << "\";\n"
    << "  Pseudo = \"" << e.pseudo << "\";\n"
    << "  Access_Type = RO;\n"
    << "  Squash = No_Root_Squash;\n"
    << "  SecType = sys;\n"
    << "  Protocols = 4;\n"
    << "  Transports = TCP;\n"
    << "  CLIENT { Clients = 127.0.0.1; Access_Type = RO; }\n"
    << e.extra << "  FSAL { Name = VFS; }\n"
    << "}\n";
  return o.str();
}

Ganesha::Ganesha(std::string dir)
    : dir_(std::move(dir)), config_(dir_ + "/ganesha.conf"), proc_("ganesha.nfsd", dir_ + "/ganesha.stdout") {
  mkdirs(dir_ + "/recovery");
}

std::string Ganesha::start(const std::vector<GaneshaExport>& exports) {
  std::string blocks;
  for (const auto& e : exports) blocks += ganesha_export_block(e);
  return start(blocks);
}

std::string Ganesha::start(const std::string& export_blocks) {
  port_ = free_tcp_port();
  // NFSv4 only: v3 needs ganesha to register with rpcbind, and it exits when
  // it cannot ("Cannot register NFS V3 on UDP"). The other ports are private
  // too, so nothing clashes with another test or a system ganesha.
  std::ostringstream c;
  c << "NFS_CORE_PARAM {\n"
    << "  Bind_addr = 127.0.0.1;\n"
    << "  NFS_Port = " << port_ << ";\n"
    << "  MNT_Port = " << free_tcp_port() << ";\n"
    << "  NLM_Port = " << free_tcp_port() << ";\n"
    << "  Rquota_Port = " << free_tcp_port() << ";\n"
    << "  Enable_NLM = false;\n"
    << "  Enable_RQUOTA = false;\n"
    << "  Protocols = 4;\n"
    << "}\n"
    << "NFSv4 {\n"
    << "  Graceless = true;\n"  // no 90 s grace period at start
    << "  RecoveryRoot = \"" << dir_ << "/recovery\";\n"
    << "}\n"
    << "NFS_KRB5 { Active_krb5 = false; }\n"
    << export_blocks;
  write_file(config_, c.str());
  return proc_.start({"ganesha.nfsd", "-F", "-L", dir_ + "/ganesha.log", "-f", config_, "-p", dir_ + "/ganesha.pid",
                      "-N", "NIV_EVENT"},
                     port_, 20s)
                 .empty()
             ? ""
             : "ganesha.nfsd did not start; log:\n" + log();
}

std::string Ganesha::log() const {
  return tail_lines(slurp(dir_ + "/ganesha.log"), 60) + tail_lines(slurp(dir_ + "/ganesha.stdout"), 20);
}

// --------------------------------------------------------------------- smbd

std::string smb_share_stanza(const SmbShare& s) {
  std::ostringstream o;
  o << "[" << s.name << "]\n"
    << "  path = " << s.path << "\n"
    << "  read only = yes\n"
    << "  guest ok = yes\n"
    << "  guest only = yes\n";
  if (s.extra.find("force user") == std::string::npos) o << "  force user = root\n";
  o << s.extra;
  return o.str();
}

Smbd::Smbd(std::string dir) : dir_(std::move(dir)), config_(dir_ + "/smb.conf"), proc_("smbd", dir_ + "/smbd.stdout") {
  for (const char* d : {"private", "state", "cache", "lock", "pid", "ncalrpc", "binddns"}) mkdirs(dir_ + "/" + d);
}

std::string Smbd::start(const std::vector<SmbShare>& shares) {
  std::string stanzas;
  for (const auto& s : shares) stanzas += smb_share_stanza(s);
  return start(stanzas);
}

std::string Smbd::start(const std::string& share_stanzas) {
  port_ = free_tcp_port();
  std::ostringstream c;
  c << "[global]\n"
    << "  smb ports = " << port_ << "\n"
    << "  interfaces = lo\n"
    << "  bind interfaces only = yes\n"
    << "  server role = standalone server\n"
    << "  map to guest = Bad User\n"
    << "  disable netbios = yes\n"
    << "  private dir = " << dir_ << "/private\n"
    << "  state directory = " << dir_ << "/state\n"
    << "  cache directory = " << dir_ << "/cache\n"
    << "  lock directory = " << dir_ << "/lock\n"
    << "  pid directory = " << dir_ << "/pid\n"
    << "  ncalrpc dir = " << dir_ << "/ncalrpc\n"
    << "  binddns dir = " << dir_ << "/binddns\n"
    << "  log file = " << dir_ << "/smbd.log\n"
    << "  max log size = 0\n"
    << "  log level = 1\n"
    << "  load printers = no\n"
    << "  printing = bsd\n"
    << "  printcap name = /dev/null\n"
    << "  disable spoolss = yes\n"
    << "  registry shares = no\n"
    << "  usershare max shares = 0\n"
    << "  kernel oplocks = no\n"
    << "\n"
    << share_stanzas;
  write_file(config_, c.str());
  std::string err = proc_.start({"smbd", "--foreground", "--no-process-group", "-s", config_}, port_, 20s);
  return err.empty() ? "" : err + "; log:\n" + log();
}

std::string Smbd::log() const {
  return tail_lines(slurp(dir_ + "/smbd.log"), 60) + tail_lines(slurp(dir_ + "/smbd.stdout"), 20);
}

std::string Smbd::client_command(const std::string& share) const {
  return "smbclient -N -m SMB3 -p " + std::to_string(port_) + " " + shell_quote("//127.0.0.1/" + share);
}

CommandResult Smbd::client(const std::string& share, const std::string& commands) const {
  return run("timeout 120 " + client_command(share) + " -c " + shell_quote(commands));
}

// --------------------------------------------------------------- SmbSession

SmbSession::SmbSession(const Smbd& smbd, const std::string& share, std::string out_path) : out_path_(std::move(out_path)) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return;
  int out = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const std::string cmd = smbd.client_command(share);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    ::dup2(pipefd[0], 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipefd[0]);
  ::close(out);
  if (pid < 0) {
    ::close(pipefd[1]);
    return;
  }
  pid_ = pid;
  stdin_fd_ = pipefd[1];
}

bool SmbSession::send(const std::string& line) {
  if (stdin_fd_ < 0) return false;
  const std::string l = line + "\n";
  return ::write(stdin_fd_, l.data(), l.size()) == static_cast<ssize_t>(l.size());
}

std::string SmbSession::finish(std::chrono::seconds timeout) {
  if (pid_ > 0) {
    send("quit");
    ::close(stdin_fd_);
    stdin_fd_ = -1;
    int st = 0;
    if (!wait_until([&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; }, timeout)) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, &st, 0);
    }
    pid_ = -1;
  }
  return slurp(out_path_);
}

SmbSession::~SmbSession() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  if (pid_ > 0) {
    ::kill(-pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
  }
}

}  // namespace sendense::test::reexport
