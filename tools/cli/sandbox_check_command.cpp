// sandbox-check: starts workers exactly as the daemon does (fuse/worker_client.h)
// over a small blank image, reads what the kernel says about one of them
// from outside (/proc: ids, capabilities, no_new_privs, seccomp, namespaces,
// root, descriptors, limits), then has fresh workers try each forbidden
// action of worker/probes.h and reports what stopped it. Exit 1 when any
// action is allowed, stopped by something other than what should stop it,
// or an outside check fails.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fuse/worker_client.h"
#include "readers/common/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/format.h"
#include "worker/probes.h"

namespace sendense::cli {

namespace {

struct Finding {
  std::string name, what, result, detail;  // result: ok | FAILED | not applied
};

std::string status_field(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) {
      const auto v = line.find_first_not_of(" \t", key.size() + 1);
      return v == std::string::npos ? "" : line.substr(v);
    }
  return "";
}

std::string limit_line(pid_t pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name, 0) == 0) {
      std::istringstream cols(line.substr(name.size()));
      std::string soft, hard;
      cols >> soft >> hard;
      return soft + "/" + hard;
    }
  return "?";
}

std::vector<Finding> outside_checks(const Worker& w) {
  const pid_t pid = w.pid();
  const std::string proc = "/proc/" + std::to_string(pid);
  std::vector<Finding> out;
  auto check = [&](const std::string& name, const std::string& what, bool ok, const std::string& detail) {
    out.push_back({name, what, ok ? "ok" : "FAILED", detail});
  };
  auto spaced = [](std::string v) {
    std::replace(v.begin(), v.end(), '\t', ' ');
    return v;
  };
  const std::string uid = spaced(status_field(pid, "Uid")), gid = spaced(status_field(pid, "Gid"));
  check("uid", "runs as an unprivileged user and group", uid.find_first_of("123456789") == 0 &&
        uid.find(" 0") == std::string::npos && gid.find_first_of("123456789") == 0 && gid.find(" 0") == std::string::npos &&
        status_field(pid, "Groups").empty(), "Uid " + uid + ", Gid " + gid);
  bool no_caps = true;
  std::string caps;
  for (const char* k : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    const std::string v = status_field(pid, k);
    caps += std::string(caps.empty() ? "" : ", ") + k + " " + v;
    no_caps = no_caps && v.find_first_not_of('0') == std::string::npos;
  }
  check("capabilities", "holds no capability, not even in its bounding set", no_caps, caps);
  check("no_new_privs", "can never gain privileges (setuid programs, file capabilities)",
        status_field(pid, "NoNewPrivs") == "1", "NoNewPrivs " + status_field(pid, "NoNewPrivs"));
  check("seccomp", "runs under a seccomp filter", status_field(pid, "Seccomp") == "2",
        "Seccomp " + status_field(pid, "Seccomp"));
  struct stat st {};
  check("dumpable", "not dumpable: no core, its /proc owned by root",
        ::stat((proc + "/status").c_str(), &st) == 0 && st.st_uid == 0, "/proc/PID/status owner " + std::to_string(st.st_uid));
  std::string shared;
  for (const char* ns : {"mnt", "pid", "net", "ipc", "uts"}) {
    std::error_code e1, e2;
    const auto mine = std::filesystem::read_symlink(std::string("/proc/self/ns/") + ns, e1);
    const auto its = std::filesystem::read_symlink(proc + "/ns/" + ns, e2);
    if (e1 || e2 || mine == its) shared += std::string(shared.empty() ? "" : " ") + ns;
  }
  check("namespaces", "own mount, pid, network, IPC and UTS namespaces", shared.empty(),
        shared.empty() ? "mnt pid net ipc uts" : "shared with the host: " + shared);
  std::error_code ec;
  size_t entries = 0;
  for (auto it = std::filesystem::directory_iterator(proc + "/root", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec))
    ++entries;
  check("root", "an empty root: no host file in sight", !ec && entries == 0,
        ec ? ec.message() : std::to_string(entries) + " entries in /");
  std::string fds;
  bool only_ours = true;
  for (auto it = std::filesystem::directory_iterator(proc + "/fd", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    const int fd = std::atoi(it->path().filename().c_str());
    const std::string target = std::filesystem::read_symlink(it->path(), ec).string();
    if (fd <= 2) continue;  // stdio: the daemon's log
    fds += std::string(fds.empty() ? "" : ", ") + std::to_string(fd) + " " + target;
    if (fd >= worker::kFirstImageFd + static_cast<int>(w.images().size()) ||
        (fd == worker::kControlFd) != (target.rfind("socket:", 0) == 0))
      only_ours = false;
  }
  check("descriptors", "holds only its socket and the images passed in", !ec && only_ours, fds);
  const std::string core = limit_line(pid, "Max core file size"), nofile = limit_line(pid, "Max open files"),
                    cpu = limit_line(pid, "Max cpu time");
  check("limits", "no core files; open files and CPU time bounded",
        core == "0/0" && nofile.find("unlimited") == std::string::npos && cpu.find("unlimited") == std::string::npos,
        "core " + core + ", open files " + nofile + ", cpu seconds " + cpu);
  return out;
}

Finding run_probe(const worker::ProbeInfo& probe, const std::vector<DiskSpec>& disks, const WorkerOptions& options) {
  Finding f{probe.name, probe.what, "FAILED", ""};
  std::shared_ptr<Worker> w = Worker::start("sandbox-check", 0, disks, FsOpenOptions{}, options);
  if (!w) throw Error(EIO, "the worker refused the check image");
  std::string stopped_by;  // "kill", "trap", "error"
  try {
    worker::Writer args;
    args.str(probe.name);
    const std::vector<std::byte> out = w->call(worker::Op::probe, 0, args.buf);
    worker::Reader r(out);
    const worker::ProbeResult p = worker::get_probe_result(r);
    switch (p.outcome) {
      case worker::ProbeOutcome::allowed:
        f.detail = "ALLOWED: " + p.detail;
        return f;
      case worker::ProbeOutcome::not_applied:
        f.result = "not applied";
        f.detail = p.detail;
        return f;
      case worker::ProbeOutcome::refused:
        stopped_by = "error";
        f.detail = std::string("refused: ") + (strerrorname_np(p.error) ? strerrorname_np(p.error) : "?") +
                   (p.detail.empty() ? "" : " (" + p.detail + ")");
        break;
    }
  } catch (const Error& e) {
    if (!w->failed()) throw;
    const std::string why = w->failure();
    if (why == "signal=" + std::to_string(SIGSYS)) {
      stopped_by = "kill";
      f.detail = "killed by the seccomp filter (SIGSYS)";
    } else if (why == "exit=159") {
      stopped_by = "trap";
      f.detail = "trapped by the seccomp filter (not on the allowlist; worker ended)";
    } else {
      f.detail = "the worker ended otherwise (" + why + ")";
      return f;
    }
  }
  const char* want = probe.stop == worker::Stop::filter_kill   ? "kill"
                     : probe.stop == worker::Stop::filter_trap ? "trap"
                                                               : "error";
  if (stopped_by == want) f.result = "ok";
  else f.detail += std::string("; expected ") + (stopped_by == "error" ? "the seccomp filter" : "an error return");
  return f;
}

}  // namespace

int sandbox_check(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--worker-memory", "--config"}, {"--json"});
  expect_positionals(args, {});
  if (::geteuid() != 0) throw Error(EPERM, "sandbox-check needs root: workers change their ids and namespaces as the daemon's do");
  WorkerOptions options;
  options.quiet = true;
  options.timeout = std::chrono::seconds(10);
  const std::string mib = args.value("--worker-memory").value_or(daemon_setting(args, "worker-memory"));
  if (!mib.empty()) options.memory_limit = std::stoull(mib) << 20;

  // A blank 1 MiB raw disk: the workers open it through the engine as a
  // backup (it holds no volume) and get its descriptor, as they would.
  char dir_template[] = "/tmp/sendense-sandbox-check.XXXXXX";
  if (!::mkdtemp(dir_template)) throw sys_error("mkdtemp", dir_template);
  const std::string dir = dir_template;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  const std::string image = dir + "/blank.raw";
  std::filesystem::resize_file((std::ofstream(image), image), 1 << 20);
  const std::vector<DiskSpec> disks = {{image, ImageFormat::raw}};

  std::vector<Finding> checks;
  {
    std::shared_ptr<Worker> w = Worker::start("sandbox-check", 0, disks, FsOpenOptions{}, options);
    if (!w) throw Error(EIO, "the worker refused the check image");
    checks = outside_checks(*w);
  }
  std::vector<Finding> probes;
  for (const worker::ProbeInfo& p : worker::kProbes) probes.push_back(run_probe(p, disks, options));

  bool ok = true;
  for (const auto* list : {&checks, &probes})
    for (const Finding& f : *list) ok = ok && f.result != "FAILED";
  if (args.flag("--json")) {
    auto rows = [](const std::vector<Finding>& list) {
      nlohmann::json a = nlohmann::json::array();
      for (const Finding& f : list) a.push_back({{"name", f.name}, {"what", f.what}, {"result", f.result}, {"detail", f.detail}});
      return a;
    };
    std::cout << nlohmann::json{{"ok", ok}, {"checks", rows(checks)}, {"probes", rows(probes)}}.dump(2) << "\n";
  } else {
    std::vector<std::vector<std::string>> rows = {{"RESULT", "CHECK", "WHAT", "DETAIL"}};
    for (const Finding& f : checks) rows.push_back({f.result, f.name, f.what, f.detail});
    std::cout << "The worker, seen from outside:\n" << table(rows) << "\n";
    rows = {{"RESULT", "ACTION", "WHAT", "STOPPED BY"}};
    for (const Finding& f : probes) rows.push_back({f.result, f.name, f.what, f.detail});
    std::cout << "Forbidden actions, each tried by a fresh worker:\n" << table(rows) << "\n"
              << (ok ? "sandbox ok\n" : "sandbox NOT as built: see FAILED above\n");
  }
  return ok ? 0 : 1;
}

}  // namespace sendense::cli
