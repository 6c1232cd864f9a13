// Real file servers for re-export tests: NFS-Ganesha (FSAL VFS, NFSv4 only,
// so no rpcbind) and smbd, each started for one test on 127.0.0.1 and a
// private port, with its configuration, state, locks and log in a private
// folder, and stopped at the end of the test, also on failure.
//
// Each server runs as a child in a process group of its own (smbd forks one
// child per client); stop() sends SIGTERM to the group, waits, then SIGKILL
// to the group, and the destructor does the same: no server outlives the
// object that started it. A server also gets SIGKILL when the test process
// dies without running destructors (PR_SET_PDEATHSIG).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace sendense::test::reexport {

// A TCP port on 127.0.0.1 nobody listens on now (bind to port 0).
int free_tcp_port();
// True once something listens on 127.0.0.1:port or *:port (/proc/net/tcp).
bool tcp_listening(int port);

// Readlink of every descriptor of `pid` (/proc/PID/fd): "/mnt/x/y", "socket:[…]".
std::vector<std::string> open_fds(pid_t pid);
// How many of them are paths under `dir` (the folder itself included).
size_t fds_under(pid_t pid, const std::string& dir);
// Every process in process group `pgid` (smbd's children are in its group).
std::vector<pid_t> process_group(pid_t pgid);
// `pid`, its process group and its children (smbd's per-client processes).
std::vector<pid_t> server_processes(pid_t pid);

class ServerProcess {
 public:
  ServerProcess(std::string name, std::string log_path) : name_(std::move(name)), log_path_(std::move(log_path)) {}
  ~ServerProcess() { stop(); }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts argv[0] (stdout+stderr appended to the log, stdin /dev/null) in a
  // new session, waits until it listens on `port`. "" or why not.
  std::string start(const std::vector<std::string>& argv, int port, std::chrono::seconds timeout);
  // SIGTERM to the group, up to `grace`, then SIGKILL to the group. "" when
  // the leader exited on SIGTERM, else what happened (after killing).
  std::string stop(std::chrono::seconds grace = std::chrono::seconds(15));
  bool alive();
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }

 private:
  std::string name_;
  std::string log_path_;
  pid_t pid_ = -1;
};

struct GaneshaExport {
  uint16_t id = 0;
  std::string path;     // the exported folder (a FUSE mount or a folder in one)
  std::string pseudo;   // NFSv4 pseudo path, "/restore"
  std::string extra;    // more lines inside the EXPORT block
};

// The EXPORT { ... } block our tests use: read-only, sys auth, root not
// squashed (the daemon's tree is root's), FSAL VFS.
std::string ganesha_export_block(const GaneshaExport& e);

class Ganesha {
 public:
  // `dir`: a private folder for the config, recovery state, pid and log.
  explicit Ganesha(std::string dir);
  ~Ganesha() { stop(); }

  // Writes the configuration (core parameters + `export_blocks`) and starts
  // ganesha.nfsd -F on a free port. "" or why not (with the log's tail).
  std::string start(const std::string& export_blocks);
  std::string start(const std::vector<GaneshaExport>& exports);
  std::string stop() { return proc_.stop(); }
  bool alive() { return proc_.alive(); }
  pid_t pid() const { return proc_.pid(); }
  int port() const { return port_; }
  std::string log() const;
  const std::string& config_path() const { return config_; }

 private:
  std::string dir_, config_;
  int port_ = 0;
  ServerProcess proc_;
};

struct SmbShare {
  std::string name;
  std::string path;
  std::string extra;  // more lines inside the [share] section
};

// A read-only guest share; `force user = root` unless `extra` names another.
std::string smb_share_stanza(const SmbShare& s);

class Smbd {
 public:
  explicit Smbd(std::string dir);
  ~Smbd() { stop(); }

  std::string start(const std::string& share_stanzas);
  std::string start(const std::vector<SmbShare>& shares);
  std::string stop() { return proc_.stop(); }
  bool alive() { return proc_.alive(); }
  pid_t pid() const { return proc_.pid(); }
  int port() const { return port_; }
  std::string log() const;

  // smbclient -N -m SMB3 -p PORT //127.0.0.1/SHARE -c COMMANDS (commands
  // separated by ';').
  CommandResult client(const std::string& share, const std::string& commands) const;
  // The shell command line of an smbclient session on `share` (commands on
  // its stdin), for a test that feeds one step by step.
  std::string client_command(const std::string& share) const;

 private:
  std::string dir_, config_;
  int port_ = 0;
  ServerProcess proc_;
};

// An smbclient session fed from a pipe, step by step: commands written now
// run in the same SMB session (same TCP connection, same tree connect) as
// the earlier ones. Output goes to a file, read at the end.
class SmbSession {
 public:
  SmbSession(const Smbd& smbd, const std::string& share, std::string out_path);
  ~SmbSession();
  bool started() const { return pid_ > 0; }
  // Writes one line (a command) to smbclient's stdin.
  bool send(const std::string& line);
  // Sends "quit", closes stdin, waits up to `timeout`; returns the output.
  std::string finish(std::chrono::seconds timeout = std::chrono::seconds(20));
  pid_t pid() const { return pid_; }

 private:
  std::string out_path_;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
};

}  // namespace sendense::test::reexport
