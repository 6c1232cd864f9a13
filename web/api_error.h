// The one error the HTTP layer answers with: a status, a machine code and a
// human message, sent as {"error": message, "code": code}. Anything else that
// escapes a handler becomes 500 `internal` (logged, not shown).
#pragma once

#include <stdexcept>
#include <string>

namespace sendense::web {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), code_(std::move(code)) {}
  int status() const noexcept { return status_; }
  const std::string& code() const noexcept { return code_; }

 private:
  int status_;
  std::string code_;
};

inline ApiError not_found() { return ApiError(404, "not_found", "no such backup or path"); }
inline ApiError bad_request(const std::string& why) { return ApiError(400, "bad_request", why); }
inline ApiError unauthorized() { return ApiError(401, "unauthorized", "missing, unknown, expired or revoked token"); }

}  // namespace sendense::web
