// The one error type of the project: an errno, a message, and where it
// happened (image, backup, volume, offset). The FUSE edge maps it to the
// errno it carries; anything else that escapes becomes EIO there.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace sendense {

class Error : public std::runtime_error {
 public:
  // `code` is a positive errno (EIO for damaged input, ENOENT, EROFS, ...).
  // `where` names the object at fault, e.g. "/repo/a.qcow2" or
  // "backup-x/part1 inode 12"; it is prefixed to what() as "where: what".
  Error(int code, const std::string& what, const std::string& where = {});

  int code() const noexcept { return code_; }
  const std::string& where() const noexcept { return where_; }
  const std::string& message() const noexcept { return message_; }

 private:
  int code_;
  std::string where_;
  std::string message_;
};

// Builds an Error from the current errno; capture errno before anything else
// can change it: `throw sys_error("open", path);`
Error sys_error(const std::string& what, const std::string& where = {});

// Prefixes `where` to an error from a lower layer, keeping its errno:
// rethrow_with_context(e, "backup-x/part1") -> "backup-x/part1: <e.what()>".
[[noreturn]] void rethrow_with_context(const Error& e, const std::string& where);

}  // namespace sendense
