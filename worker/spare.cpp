#include "worker/spare.h"

#include <fcntl.h>
#include <linux/prctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "readers/common/error.h"
#include "worker/protocol.h"

namespace sendense::worker {

namespace {

// The process's memory layout as /proc/self/stat gives it: what
// PR_SET_MM_MAP must be given back unchanged. Fixed for the process's life
// but for brk (and arg_end, which take_name sets): read once, while /proc
// is still there (before leave_host_mounts, sandbox.h).
prctl_mm_map layout_from_proc() {
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) throw Error(EIO, "cannot read /proc/self/stat");
  std::istringstream fields(stat.substr(close + 2));
  std::vector<unsigned long long> f(3);  // fields 1-2 (pid, comm) are not in the stream
  std::string word;
  while (fields >> word) f.push_back(std::strtoull(word.c_str(), nullptr, 10));
  if (f.size() < 52) throw Error(EIO, "/proc/self/stat has too few fields");
  prctl_mm_map m{};
  m.start_code = f[26];
  m.end_code = f[27];
  m.start_stack = f[28];
  m.start_data = f[45];
  m.end_data = f[46];
  m.start_brk = f[47];
  m.arg_start = f[48];
  m.arg_end = f[49];
  m.env_start = f[50];
  m.env_end = f[51];
  m.exe_fd = static_cast<__u32>(-1);  // keep /proc/PID/exe
  return m;
}

prctl_mm_map current_layout() {
  static const prctl_mm_map fixed = layout_from_proc();
  prctl_mm_map m = fixed;
  m.brk = static_cast<__u64>(::syscall(SYS_brk, 0));
  return m;
}

}  // namespace

void check_name_can_change() {
  prctl_mm_map layout = current_layout();
  if (::prctl(PR_SET_MM, PR_SET_MM_MAP, &layout, sizeof layout, 0) != 0)
    throw sys_error("cannot set the command line (PR_SET_MM_MAP)");
}

void say_ready() {
  const Header h{0, 0, 0};
  while (::send(kControlFd, &h, sizeof h, MSG_NOSIGNAL) < 0)
    if (errno != EINTR) throw sys_error("cannot tell the daemon the spare is ready");
}

std::vector<int> passed_descriptors(const msghdr& m) {
  std::vector<int> fds;
  for (const cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&m), const_cast<cmsghdr*>(c))) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const size_t at = fds.size();
    fds.resize(at + n);
    std::memcpy(fds.data() + at, CMSG_DATA(c), n * sizeof(int));
  }
  if (m.msg_flags & MSG_CTRUNC) throw Error(EMSGSIZE, "the setup carried more descriptors than a spare takes");
  return fds;
}

void place_image_descriptors(const std::vector<int>& fds) {
  // Two steps, as the daemon's child does before exec: first above every
  // target (a received descriptor may sit on another's target), then down.
  const int high = kFirstImageFd + static_cast<int>(fds.size());
  std::vector<int> moved;
  for (int fd : fds) {
    const int tmp = ::fcntl(fd, F_DUPFD, high);
    if (tmp < 0) throw sys_error("cannot move a passed image descriptor");
    ::close(fd);
    moved.push_back(tmp);
  }
  for (size_t i = 0; i < moved.size(); ++i) {
    if (::dup2(moved[i], kFirstImageFd + static_cast<int>(i)) < 0) throw sys_error("cannot place a passed image descriptor");
    ::close(moved[i]);
  }
  const auto limit = static_cast<rlim_t>(descriptor_limit(fds.size()));
  const rlimit nofile{limit, limit};
  if (::setrlimit(RLIMIT_NOFILE, &nofile) != 0) throw sys_error("cannot limit the worker's descriptors");
}

void take_name(char** argv, const std::string& backup_id) {
  if (!argv[1] || !argv[2]) throw Error(EINVAL, "a spare is started with two arguments");
  char* start = argv[1];
  char* end = argv[2] + std::strlen(argv[2]) + 1;  // the arguments lie end to end
  const size_t room = static_cast<size_t>(end - start);
  if (backup_id.size() + 1 > room) throw Error(ENAMETOOLONG, "backup id longer than a spare's command line holds", backup_id);
  prctl_mm_map layout = current_layout();
  std::memset(start, 0, room);
  std::memcpy(start, backup_id.data(), backup_id.size());
  // PR_SET_MM_ARG_END alone needs CAP_SYS_RESOURCE, which hosts (containers)
  // may not grant; the whole map, given back with only arg_end changed,
  // needs no capability (exe_fd unchanged).
  layout.arg_end = reinterpret_cast<__u64>(start + backup_id.size() + 1);
  if (::prctl(PR_SET_MM, PR_SET_MM_MAP, &layout, sizeof layout, 0) != 0)
    throw sys_error("cannot end the command line after the backup id", backup_id);
}

}  // namespace sendense::worker
