// Helpers shared by the tests: a temporary folder removed afterwards, and
// running the real tools (mkfs, sfdisk, qemu-img, ...) with their output.
#pragma once

#include <cstdio>
#include <string>

namespace sendense::test {

struct CommandResult {
  int status = -1;      // exit code (or 128 + signal)
  std::string output;   // stdout and stderr together
};

// Runs `command` with /bin/sh -c, capturing stdout+stderr.
CommandResult run(const std::string& command);

// Runs `command` and fails the current test (ADD_FAILURE) if it exits non-zero.
std::string run_ok(const std::string& command);

// True if `tool` is on PATH.
bool have_tool(const std::string& tool);

// Single-quotes `s` for the shell; q() is the short name the tests use.
std::string shell_quote(const std::string& s);
inline std::string q(const std::string& s) { return shell_quote(s); }

// `s` without trailing newlines and spaces (a command's output).
inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A fresh folder under $TMPDIR, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);
std::string sha256_of(const std::string& path);

// qemu-img insists on -F: turns the backing format header extension of the
// qcow2 `image` into an unknown (ignored) one, so the header declares no
// backing format. Throws if there is none.
void hide_qcow2_backing_format(const std::string& image);

// A loopback TCP port free a moment ago (for a server a test starts).
int free_port();

}  // namespace sendense::test

// Skips the current test loudly, with the reason printed, so a run never
// passes silently without its checks. With SENDENSE_NO_SKIP=1 in the
// environment (CI sets it: its machines have root, loop devices, FUSE and
// every tool) a skip is a failure instead.
namespace sendense::test {
bool skips_are_failures();
}  // namespace sendense::test
#define SENDENSE_SKIP(reason)                                                   \
  do {                                                                          \
    if (::sendense::test::skips_are_failures()) FAIL() << "cannot skip under SENDENSE_NO_SKIP=1: " << reason; \
    GTEST_SKIP() << "SKIPPED: " << reason;                                      \
  } while (0)

// Skips (see SENDENSE_SKIP) when a tool is missing.
#define SENDENSE_REQUIRE_TOOL(tool)                                             \
  do {                                                                          \
    if (!::sendense::test::have_tool(tool)) SENDENSE_SKIP("needs " << (tool));  \
  } while (0)

// The ONE skip allowed under SENDENSE_NO_SKIP=1 (CI): the host lacks a kernel
// feature no package can provide (the nbd module: CI machines have none; the
// kernel backend's nbd tests run only where /dev/nbd0 exists). It never
// fails; it prints loudly. Every other missing capability uses SENDENSE_SKIP.
#define SENDENSE_SKIP_HOST_LACKS(what)                                                        \
  do {                                                                                        \
    std::fprintf(stderr, "\n*** SKIPPED: this host lacks %s (allowed under SENDENSE_NO_SKIP) ***\n\n", \
                 std::string(what).c_str());                                                  \
    GTEST_SKIP() << "SKIPPED: this host lacks " << (what);                                    \
  } while (0)
