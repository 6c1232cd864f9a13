// The server's side of the broker socket: one request at a time (a mutex),
// so the server's many HTTP threads share the one socket.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sendense::web {

// Who is calling: from a valid token.
struct Caller {
  std::string token_id;
  std::optional<std::string> tenant;  // nullopt: the operator
  bool is_operator() const { return !tenant; }
  std::string audit_tenant() const { return tenant.value_or(""); }
};

class BrokerClient {
 public:
  explicit BrokerClient(int fd) : fd_(fd) {}

  // The caller of a token; nullopt when it is unknown, expired or revoked.
  std::optional<Caller> authenticate(const std::string& token);
  nlohmann::json backups(const Caller& caller);           // {"backups": [...]}
  nlohmann::json mounts(const Caller& caller);            // {"mounts": [...]}
  bool detach(const Caller& caller, const std::string& mount_id);
  void audit(const Caller& caller, const std::string& action, const std::string& backup_id,
             const std::string& path, uint64_t bytes, const std::string& result);

  // One round trip; throws Error when the broker is gone or answers an error.
  nlohmann::json call(const nlohmann::json& request);

 private:
  static nlohmann::json tenant_json(const Caller& c);
  int fd_;
  std::mutex mutex_;
};

}  // namespace sendense::web
