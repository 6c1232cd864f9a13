// The --metrics-listen endpoint: GET /metrics answers Metrics::render() over
// HTTP (cpp-httplib), from its own thread. Off unless asked for; bind it to
// a loopback address: it has no authentication.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "fuse/metrics.h"

namespace httplib {
class Server;
}

namespace sendense {

class MetricsServer {
 public:
  // Binds ADDRESS:PORT now (so a taken port fails the start-up) and serves
  // from a thread. Throws Error when it cannot bind.
  MetricsServer(const Metrics& metrics, const std::string& listen);
  ~MetricsServer();  // stops the thread
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace sendense
