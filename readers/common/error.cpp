#include "readers/common/error.h"

#include <cstring>

namespace sendense {

namespace {
std::string compose(const std::string& what, const std::string& where) {
  return where.empty() ? what : where + ": " + what;
}
}  // namespace

Error::Error(int code, const std::string& what, const std::string& where)
    : std::runtime_error(compose(what, where)), code_(code > 0 ? code : EIO), where_(where), message_(what) {}

Error sys_error(const std::string& what, const std::string& where) {
  const int saved = errno;
  return Error(saved, what + ": " + std::strerror(saved), where);
}

void rethrow_with_context(const Error& e, const std::string& where) {
  throw Error(e.code(), e.what(), where);
}

}  // namespace sendense
