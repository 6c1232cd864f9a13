#include "web/broker_client.h"

#include <cerrno>

#include "readers/common/error.h"
#include "web/frames.h"

namespace sendense::web {

using nlohmann::json;

json BrokerClient::call(const json& request) {
  std::lock_guard lock(mutex_);
  write_frame(fd_, request);
  auto answer = read_frame(fd_);
  if (!answer) throw Error(EPIPE, "the broker is gone");
  if (answer->contains("error")) throw Error(EIO, "broker: " + (*answer)["error"].get<std::string>());
  return *answer;
}

json BrokerClient::tenant_json(const Caller& c) { return c.tenant ? json(*c.tenant) : json(nullptr); }

std::optional<Caller> BrokerClient::authenticate(const std::string& token) {
  json a = call({{"op", "auth"}, {"token", token}});
  if (!a.value("ok", false)) return std::nullopt;
  Caller c;
  c.token_id = a.at("token_id").get<std::string>();
  if (!a.at("tenant").is_null()) c.tenant = a.at("tenant").get<std::string>();
  return c;
}

json BrokerClient::backups(const Caller& caller) { return call({{"op", "backups"}, {"tenant", tenant_json(caller)}}); }

json BrokerClient::mounts(const Caller& caller) { return call({{"op", "mounts"}, {"tenant", tenant_json(caller)}}); }

bool BrokerClient::detach(const Caller& caller, const std::string& mount_id) {
  return call({{"op", "detach"}, {"tenant", tenant_json(caller)}, {"mount_id", mount_id}}).value("ok", false);
}

void BrokerClient::audit(const Caller& caller, const std::string& action, const std::string& backup_id,
                         const std::string& path, uint64_t bytes, const std::string& result) {
  call({{"op", "audit"},
        {"tenant", caller.audit_tenant()},
        {"token_id", caller.token_id},
        {"action", action},
        {"backup_id", backup_id},
        {"path", path},
        {"bytes", bytes},
        {"result", result}});
}

}  // namespace sendense::web
