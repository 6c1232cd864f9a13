// What one request costs a worker on this machine before any work: the
// round trip of a small message over a SOCK_SEQPACKET socketpair (the
// worker protocol's transport, worker/protocol.h) between two processes,
// and for scale between two threads of one process. compare-benchmark.sh
// prints it under the isolation's cost: a walk through a worker is a few
// thousand such round trips, so this is the machine's share of that cost.
//   round_trip_bench [ROUND_TRIPS]   -> "process_us thread_us"
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace {

constexpr size_t kMessage = 64;  // a request's header and arguments

void echo(int fd) {
  char buf[kMessage];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0 || ::write(fd, buf, static_cast<size_t>(n)) != n) return;
  }
}

// Microseconds per round trip over `fd`, whose other end echoes.
double time_round_trips(int fd, long count) {
  char buf[kMessage] = {};
  auto once = [&] {
    if (::write(fd, buf, sizeof buf) != static_cast<ssize_t>(sizeof buf) ||
        ::read(fd, buf, sizeof buf) != static_cast<ssize_t>(sizeof buf)) {
      std::perror("round trip");
      std::exit(1);
    }
  };
  for (long i = 0; i < 1000; ++i) once();  // both sides awake and faulted in
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < count; ++i) once();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
         static_cast<double>(count);
}

}  // namespace

int main(int argc, char** argv) {
  const long count = argc > 1 ? std::atol(argv[1]) : 20000;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) return std::perror("socketpair"), 1;
  const pid_t child = ::fork();
  if (child < 0) return std::perror("fork"), 1;
  if (child == 0) {
    ::close(sv[0]);
    echo(sv[1]);
    ::_exit(0);
  }
  ::close(sv[1]);
  const double process_us = time_round_trips(sv[0], count);
  ::close(sv[0]);
  ::waitpid(child, nullptr, 0);

  if (::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) return std::perror("socketpair"), 1;
  std::thread peer([fd = sv[1]] { echo(fd); });
  const double thread_us = time_round_trips(sv[0], count);
  ::shutdown(sv[0], SHUT_RDWR);
  peer.join();
  ::close(sv[0]);
  ::close(sv[1]);
  std::printf("%.1f %.1f\n", process_us, thread_us);
  return 0;
}
