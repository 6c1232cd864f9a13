// The broker: the root parent of sendense-restore-web. It owns the only
// Catalog connection and answers a fixed set of requests from the server
// child over a socketpair (web/frames.h); it never parses HTTP or guest data.
//
// Requests ({"op": ...}) and answers:
//   auth    {token}                  -> {ok, token_id, tenant (string|null)}
//   backups {tenant (string|null)}   -> {backups: [{id, vm, created_at, kind, parent, attached, volumes}]}
//   mounts  {tenant}                 -> {mounts: [rows as `sendense-restore status --json`]}
//   detach  {tenant, mount_id}       -> {ok}  (false: no such mount of the caller's)
//   audit   {tenant, token_id, action, backup_id, path, bytes, result} -> {ok}
// A malformed request answers {"error": "..."}. `tenant` null means the
// operator: every backup.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>

namespace sendense {
class Catalog;
}

namespace sendense::web {

// Answers one request (no I/O besides the catalog and the audit log line).
nlohmann::json answer_broker_request(Catalog& catalog, const nlohmann::json& request);

// Serves requests on `fd` until the server closes its end (it died or
// exited). Returns normally then; throws Error on a protocol error.
void serve_broker(int fd, Catalog& catalog);

}  // namespace sendense::web
