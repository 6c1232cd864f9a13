// The REST API under /api/v1 and the embedded page (web-spec.md "REST API"):
// routes on an httplib::Server, each authenticated through the broker, every
// path opened through TreeAccess, errors as {"error", "code"}.
#pragma once

#include <memory>
#include <string>

#include "web/broker_client.h"
#include "web/jobs.h"
#include "web/rate_limit.h"
#include "web/tree_access.h"

namespace httplib {
class Server;
}

namespace sendense::web {

class Api {
 public:
  Api(TreeAccess& tree, BrokerClient& broker, JobTable& jobs, Bandwidth& bandwidth, bool tls)
      : tree_(tree), broker_(broker), jobs_(jobs), bandwidth_(bandwidth), tls_(tls) {}

  // Installs every route, the security headers and the error bodies.
  void install(httplib::Server& server);

 private:
  TreeAccess& tree_;
  BrokerClient& broker_;
  JobTable& jobs_;
  Bandwidth& bandwidth_;
  const bool tls_;
};

// Content-Disposition for a download named `name` (UTF-8): an ASCII
// filename= with unsafe characters as '_' and a percent-encoded filename*=.
std::string content_disposition(const std::string& name);

}  // namespace sendense::web
