#include "tests/support/test_support.h"

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace sendense::test {

CommandResult run(const std::string& command) {
  CommandResult r;
  std::string full = "( " + command + " ) 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + command);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = ::pclose(p);
  if (WIFEXITED(st)) r.status = WEXITSTATUS(st);
  else if (WIFSIGNALED(st)) r.status = 128 + WTERMSIG(st);
  return r;
}

std::string run_ok(const std::string& command) {
  CommandResult r = run(command);
  if (r.status != 0) ADD_FAILURE() << "command failed (" << r.status << "): " << command << "\n" << r.output;
  return r.output;
}

bool skips_are_failures() {
  const char* v = std::getenv("SENDENSE_NO_SKIP");
  return v && std::string(v) == "1";
}

bool have_tool(const std::string& tool) { return run("command -v " + shell_quote(tool)).status == 0; }

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/sendense-test-XXXXXX";
  if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  f << content;
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void hide_qcow2_backing_format(const std::string& image) {
  std::fstream f(image, std::ios::in | std::ios::out | std::ios::binary);
  std::string head(65536, '\0');
  f.read(head.data(), static_cast<std::streamsize>(head.size()));
  const auto at = head.find("\xe2\x79\x2a\xca");
  if (at == std::string::npos) throw std::runtime_error("no backing format extension in " + image);
  f.clear();
  f.seekp(static_cast<std::streamoff>(at));
  f.write("\x12\x34\x56\x78", 4);
  if (!f) throw std::runtime_error("cannot patch " + image);
}

std::string sha256_of(const std::string& path) {
  CommandResult r = run("sha256sum " + shell_quote(path));
  if (r.status != 0) throw std::runtime_error("sha256sum failed: " + r.output);
  return r.output.substr(0, 64);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace sendense::test
