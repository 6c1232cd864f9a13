#include "web/frames.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "readers/common/error.h"

namespace sendense::web {
namespace {

// Returns bytes read (short only at EOF).
size_t read_full(int fd, char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::read(fd, buf + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw sys_error("broker read");
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

void write_full(int fd, const char* buf, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, buf, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw sys_error("broker write");
    buf += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void write_frame(int fd, const nlohmann::json& message) {
  const std::string text = message.dump();
  if (text.size() > kMaxFrame) throw Error(EMSGSIZE, "broker message too large");
  const uint32_t len = static_cast<uint32_t>(text.size());
  std::string buf(reinterpret_cast<const char*>(&len), sizeof len);
  buf += text;
  write_full(fd, buf.data(), buf.size());
}

std::optional<nlohmann::json> read_frame(int fd) {
  uint32_t len = 0;
  size_t got = read_full(fd, reinterpret_cast<char*>(&len), sizeof len);
  if (got == 0) return std::nullopt;
  if (got != sizeof len) throw Error(EPROTO, "broker: short frame header");
  if (len > kMaxFrame) throw Error(EMSGSIZE, "broker: frame too large");
  std::string text(len, '\0');
  if (read_full(fd, text.data(), len) != len) throw Error(EPROTO, "broker: short frame");
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (parsed.is_discarded()) throw Error(EPROTO, "broker: frame is not JSON");
  return parsed;
}

}  // namespace sendense::web
