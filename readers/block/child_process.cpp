#include "readers/block/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "readers/common/error.h"

namespace sendense {

namespace {

// What the spawner thread needs, prepared by the caller so the forked child
// only makes async-signal-safe calls.
struct SpawnRequest {
  const char* program = nullptr;
  std::vector<char*> argv;
  int out_fd = -1;
  int null_fd = -1;
  // Results.
  bool done = false;
  pid_t pid = -1;
  int error = 0;        // errno of fork or exec
  bool exec_failed = false;
};

void close_from(int first) {
#ifdef SYS_close_range
  if (::syscall(SYS_close_range, static_cast<unsigned>(first), ~0U, 0U) == 0) return;
#endif
  const long max = ::sysconf(_SC_OPEN_MAX);
  for (long fd = first; fd < (max > 0 ? max : 65536); ++fd) ::close(static_cast<int>(fd));
}

// Runs in the forked child: async-signal-safe calls only.
[[noreturn]] void child_exec(const SpawnRequest& req, pid_t parent, int report_fd) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(125);  // the daemon died before prctl
  ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  sigset_t all;
  ::sigemptyset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD}) ::signal(sig, SIG_DFL);
  if (::dup2(req.null_fd, 0) < 0 || ::dup2(req.out_fd, 1) < 0 || ::dup2(req.out_fd, 2) < 0) ::_exit(126);
  // Keep the exec report pipe above 2; close everything else.
  if (::dup2(report_fd, 3) < 0) ::_exit(126);
  ::fcntl(3, F_SETFD, FD_CLOEXEC);
  close_from(4);
  ::execv(req.program, req.argv.data());
  const int e = errno;
  ssize_t ignored = ::write(3, &e, sizeof e);
  (void)ignored;
  ::_exit(127);
}

void spawn_now(SpawnRequest& req) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    req.error = errno;
    return;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    req.error = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return;
  }
  if (pid == 0) child_exec(req, parent, pipe_fds[1]);
  ::close(pipe_fds[1]);
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(pipe_fds[0], &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  req.pid = pid;
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {
    req.exec_failed = true;
    req.error = exec_errno;
  }
}

// The one long-lived thread that forks every child (see the header).
class Spawner {
 public:
  static Spawner& instance() {
    // Never destroyed: the thread must outlive every child, i.e. the process.
    static Spawner* s = new Spawner;
    return *s;
  }

  void spawn(SpawnRequest& req) {
    std::unique_lock lock(mutex_);
    queue_.push_back(&req);
    cv_.notify_all();
    done_cv_.wait(lock, [&] { return req.done; });
  }

 private:
  Spawner() { std::thread([this] { loop(); }).detach(); }

  void loop() {
    std::unique_lock lock(mutex_);
    while (true) {
      cv_.wait(lock, [&] { return !queue_.empty(); });
      SpawnRequest* req = queue_.front();
      queue_.pop_front();
      spawn_now(*req);
      req->done = true;
      done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::deque<SpawnRequest*> queue_;
};

class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

ChildProcess::ChildProcess(const ChildSpec& spec) : output_path_(spec.output_path) {
  FdGuard out(::open(spec.output_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (out.get() < 0) throw sys_error("cannot create the output file of " + spec.program, spec.output_path);
  FdGuard null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null.get() < 0) throw sys_error("cannot open /dev/null");

  SpawnRequest req;
  req.program = spec.program.c_str();
  std::vector<std::string> args = spec.argv;
  for (auto& a : args) req.argv.push_back(a.data());
  req.argv.push_back(nullptr);
  req.out_fd = out.get();
  req.null_fd = null.get();
  Spawner::instance().spawn(req);
  if (req.pid < 0) throw Error(req.error, std::string("cannot start process: ") + std::strerror(req.error), spec.program);
  pid_ = req.pid;
  if (req.exec_failed) {
    terminate();
    throw Error(req.error, std::string("cannot run: ") + std::strerror(req.error), spec.program);
  }
}

ChildProcess::~ChildProcess() { terminate(); }

bool ChildProcess::running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  reaped_ = true;
  wait_status_ = r == pid_ ? status : 0;  // ECHILD: someone else reaped it
  return false;
}

std::string ChildProcess::exit_description() const {
  if (!reaped_) return "still running";
  if (WIFEXITED(wait_status_)) return "exited with status " + std::to_string(WEXITSTATUS(wait_status_));
  if (WIFSIGNALED(wait_status_)) return "killed by signal " + std::to_string(WTERMSIG(wait_status_));
  return "ended";
}

void ChildProcess::terminate(std::chrono::milliseconds grace) {
  if (pid_ <= 0 || reaped_) return;
  // Its own group: qemu-nbd and anything it may have started.
  ::kill(-pid_, SIGTERM);
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      int status = 0;
      pid_t r;
      do {
        r = ::waitpid(pid_, &status, 0);
      } while (r < 0 && errno == EINTR);
      reaped_ = true;
      wait_status_ = r == pid_ ? status : 0;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string ChildProcess::output(size_t limit) const {
  FdGuard fd(::open(output_path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return {};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return {};
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t from = size > limit ? size - limit : 0;
  std::string s(static_cast<size_t>(size - from), '\0');
  const ssize_t n = ::pread(fd.get(), s.data(), s.size(), static_cast<off_t>(from));
  s.resize(n > 0 ? static_cast<size_t>(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

std::string find_program(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = ::getenv("PATH")) {
    std::string p(path);
    size_t start = 0;
    while (start <= p.size()) {
      const size_t colon = p.find(':', start);
      const std::string dir = p.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!dir.empty() && dir.front() == '/') dirs.push_back(dir);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  dirs.push_back("/usr/bin");
  dirs.push_back("/usr/sbin");
  for (const auto& d : dirs) {
    const std::string candidate = d + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

}  // namespace sendense
