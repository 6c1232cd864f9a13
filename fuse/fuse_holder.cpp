#include "fuse/fuse_holder.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <cstdio>

#include "fuse/node_id.h"
#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

namespace {

// Messages (SOCK_SEQPACKET keeps their boundaries): op, path length (16-bit),
// path, payload; a descriptor rides along where the op has one.
//   daemon -> holder: 'H' hello (answered by one 'M' per mount, then 'E'),
//                     'K' keep (fd), 'I' INIT request of a path, 'D' drop,
//                     'Q' unmount everything and end.
//   holder -> daemon: 'M' a kept mount (fd, payload = its INIT), 'E' end.
constexpr size_t kMaxMessage = 1 + 2 + 4096 + 4096;

struct Message {
  char op = 0;
  std::string path;
  std::string payload;
  UniqueFd fd;
};

sockaddr_un holder_address(const std::string& mountpoint, socklen_t* len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  char name[64];
  const int n = std::snprintf(name, sizeof name, "sendense-restorefs-holder-%014llx",
                              static_cast<unsigned long long>(node::vm_key(mountpoint)));
  std::memcpy(addr.sun_path + 1, name, static_cast<size_t>(n));  // abstract: leading NUL
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + static_cast<size_t>(n));
  return addr;
}

void send_message(int socket, char op, const std::string& path, std::string_view payload, int fd) {
  if (path.size() > 4096 || payload.size() > 4096) throw Error(EINVAL, "holder message too large", path);
  std::string frame;
  frame.push_back(op);
  frame.push_back(static_cast<char>(path.size() & 0xff));
  frame.push_back(static_cast<char>(path.size() >> 8));
  frame += path;
  frame += payload;
  iovec iov{frame.data(), frame.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(frame.size())) throw sys_error("cannot talk to the FUSE holder", path);
}

// False when the peer closed the connection.
bool receive_message(int socket, Message* out) {
  std::string frame(kMaxMessage, '\0');
  iovec iov{frame.data(), frame.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  *out = Message{};
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      out->fd.reset(fd);
    }
  }
  if (n < 3 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) return false;
  const size_t path_len = static_cast<unsigned char>(frame[1]) | (static_cast<size_t>(static_cast<unsigned char>(frame[2])) << 8);
  if (3 + path_len > static_cast<size_t>(n)) return false;
  out->op = frame[0];
  out->path = frame.substr(3, path_len);
  out->payload = frame.substr(3 + path_len, static_cast<size_t>(n) - 3 - path_len);
  return true;
}

// The peer's pid, or 0 when it is not a process of our own user.
pid_t same_user_peer(int socket) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
  return cred.uid == ::geteuid() ? cred.pid : 0;
}

struct Kept {
  std::string path;
  UniqueFd fd;
  std::string init;
};

void unmount_all(std::vector<Kept>& kept) {
  // Only the outermost mounts, by their own paths: reaching a tenant's view
  // means looking its folder up in the tree, a request that no daemon may be
  // there to answer. Detaching the tree takes the views stacked on it along.
  for (const auto& k : kept) {
    const bool nested = std::any_of(kept.begin(), kept.end(), [&](const Kept& outer) {
      return k.path.size() > outer.path.size() && k.path.starts_with(outer.path) && k.path[outer.path.size()] == '/';
    });
    if (nested) continue;
    // Busy (views stacked on it, an NFS server's descriptors): detach lazily.
    if (::umount2(k.path.c_str(), 0) != 0 && errno != EINVAL && errno != ENOENT)
      ::umount2(k.path.c_str(), MNT_DETACH);
    log::info("holder_unmounted", {{"mountpoint", k.path}});
  }
  kept.clear();
}

// How long a kept mount may be gone before the holder sees it.
constexpr int kGoneCheckMs = 1000;

[[noreturn]] void holder_main(int listen_fd) {
  std::vector<Kept> kept;
  std::vector<UniqueFd> clients;
  bool served = false;
  log::info("holder_started", {{"pid", std::to_string(::getpid())}});
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({listen_fd, POLLIN, 0});
    for (const auto& c : clients) fds.push_back({c.get(), POLLIN, 0});
    // The kept connections are looked at every kGoneCheck, not waited on:
    // /dev/fuse wakes every poller of a connection on each request it
    // queues (fuse_dev_poll waits on the request queue whatever events are
    // asked), so a holder waiting on them took a wake-up per request of a
    // busy mount. A look with no wait registers nothing.
    if (::poll(fds.data(), fds.size(), kept.empty() ? -1 : kGoneCheckMs) < 0) {
      if (errno == EINTR) continue;
      log::error("holder_failed", {{"error", std::strerror(errno)}});
      ::_exit(1);
    }
    std::vector<pollfd> connections;
    // No events asked: /dev/fuse reports POLLERR once its connection is
    // gone (unmounted or aborted).
    for (const auto& k : kept) connections.push_back({k.fd.get(), 0, 0});
    if (!connections.empty()) ::poll(connections.data(), connections.size(), 0);
    for (size_t i = kept.size(); i-- > 0;) {
      if (connections[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
        log::info("holder_mount_gone", {{"mountpoint", kept[i].path}});
        kept.erase(kept.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    for (size_t i = clients.size(); i-- > 0;) {
      if (!(fds[1 + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Message m;
      bool keep_client = receive_message(clients[i].get(), &m);
      if (keep_client) {
        try {
          switch (m.op) {
            case 'H':
              for (const auto& k : kept) send_message(clients[i].get(), 'M', k.path, k.init, k.fd.get());
              send_message(clients[i].get(), 'E', "", std::to_string(::getpid()), -1);
              break;
            case 'K': {
              if (!m.fd) break;
              std::erase_if(kept, [&](const Kept& k) { return k.path == m.path; });
              kept.push_back({m.path, std::move(m.fd), {}});
              break;
            }
            case 'I':
              for (auto& k : kept)
                if (k.path == m.path) k.init = m.payload;
              break;
            case 'D':
              std::erase_if(kept, [&](const Kept& k) { return k.path == m.path; });
              break;
            case 'Q':
              unmount_all(kept);
              log::info("holder_stopped", {{"reason", "asked to unmount"}});
              ::_exit(0);
            default:
              keep_client = false;
          }
        } catch (const std::exception& e) {
          log::warn("holder_client_failed", {{"error", e.what()}});
          keep_client = false;
        }
      }
      if (!keep_client) clients.erase(clients.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (fds[0].revents & POLLIN) {
      UniqueFd c(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
      if (c && same_user_peer(c.get()) != 0) {
        clients.push_back(std::move(c));
        served = true;
      }
    }
    if (served && kept.empty() && clients.empty()) {
      log::info("holder_stopped", {{"reason", "no mount left to keep"}});
      ::_exit(0);
    }
  }
}

// Runs the holder in a grandchild (reparented to init: never our zombie),
// with nothing of ours but its socket and stderr, as its own command line
// (`sendense-restorefs --fuse-holder MOUNTPOINT`): what stops or kills the
// daemon by its command line must not take the holder with it.
void start_holder(UniqueFd listen, const std::string& mountpoint) {
  const pid_t child = ::fork();
  if (child < 0) throw sys_error("cannot start the FUSE holder: fork");
  if (child == 0) {
    if (::fork() != 0) ::_exit(0);
    ::setsid();
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGPIPE, SIG_IGN);
    ::signal(SIGTERM, SIG_DFL);
    const int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
    }
    // The daemon's lock files must not outlive it in here.
    if (listen.get() != 3 && ::dup2(listen.get(), 3) != 3) ::_exit(1);
    ::close_range(4, ~0U, 0);
    ::execl("/proc/self/exe", "sendense-restorefs", "--fuse-holder", mountpoint.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
}

UniqueFd connect_to(const std::string& mountpoint) {
  socklen_t len;
  sockaddr_un addr = holder_address(mountpoint, &len);
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s) throw sys_error("cannot create the FUSE holder socket");
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return {};
  return s;
}

}  // namespace

void FuseHolder::serve(int listen_fd) {
  ::prctl(PR_SET_NAME, "sendense-holder");
  holder_main(listen_fd);
}

FuseHolder FuseHolder::connect_or_start(const std::string& mountpoint) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (UniqueFd s = connect_to(mountpoint)) {
      const pid_t pid = same_user_peer(s.get());
      if (pid == 0) throw Error(EPERM, "the FUSE holder's socket belongs to another user", mountpoint);
      return FuseHolder(std::move(s), pid);
    }
    socklen_t len;
    sockaddr_un addr = holder_address(mountpoint, &len);
    UniqueFd listen(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!listen) throw sys_error("cannot create the FUSE holder socket");
    if (::bind(listen.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      if (errno == EADDRINUSE) continue;  // another one just started: connect to it
      throw sys_error("cannot bind the FUSE holder socket", mountpoint);
    }
    if (::listen(listen.get(), 16) != 0) throw sys_error("cannot listen on the FUSE holder socket", mountpoint);
    start_holder(std::move(listen), mountpoint);
  }
  UniqueFd s = connect_to(mountpoint);
  if (!s) throw sys_error("cannot reach the FUSE holder", mountpoint);
  const pid_t pid = same_user_peer(s.get());
  if (pid == 0) throw Error(EPERM, "the FUSE holder's socket belongs to another user", mountpoint);
  return FuseHolder(std::move(s), pid);
}

void FuseHolder::send(char op, const std::string& path, std::string_view payload, int fd) {
  std::lock_guard lock(*mutex_);
  send_message(socket_.get(), op, path, payload, fd);
}

std::vector<FuseHolder::Held> FuseHolder::take_over() {
  std::lock_guard lock(*mutex_);
  send_message(socket_.get(), 'H', "", "", -1);
  std::vector<Held> held;
  for (;;) {
    Message m;
    if (!receive_message(socket_.get(), &m)) throw Error(EIO, "the FUSE holder went away during the takeover");
    if (m.op == 'E') {
      // The socket's credentials name whoever called listen() (the first
      // daemon, before it forked the holder): the holder says who it is.
      pid_ = static_cast<pid_t>(std::atoi(m.payload.c_str()));
      break;
    }
    if (m.op == 'M' && m.fd) held.push_back({m.path, std::move(m.fd), m.payload});
  }
  return held;
}

void FuseHolder::keep(const std::string& path, int fd) { send('K', path, {}, fd); }
void FuseHolder::keep_init(const std::string& path, std::string_view init) { send('I', path, init); }
void FuseHolder::drop(const std::string& path) { send('D', path, {}); }
void FuseHolder::quit() { send('Q', "", {}); }

bool FuseHolder::unmount(const std::string& mountpoint) {
  UniqueFd s = connect_to(mountpoint);
  if (!s || same_user_peer(s.get()) == 0) return false;
  send_message(s.get(), 'Q', "", "", -1);
  char byte;
  for (;;) {  // until the holder ends (it answers nothing)
    const ssize_t n = ::recv(s.get(), &byte, 1, 0);
    if (n > 0 || (n < 0 && errno == EINTR)) continue;
    return true;
  }
}

}  // namespace sendense
