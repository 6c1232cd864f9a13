#include "fuse/metrics_server.h"

#include <httplib.h>

#include <cerrno>

#include "readers/common/error.h"
#include "readers/common/log.h"

namespace sendense {

MetricsServer::MetricsServer(const Metrics& metrics, const std::string& listen)
    : server_(std::make_unique<httplib::Server>()) {
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const int port = std::stoi(listen.substr(colon + 1));
  server_->Get("/metrics", [&metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  // Scrapes are rare and small: one worker instead of httplib's default
  // pool of 8+, and a slow client must not hold it for long.
  server_->new_task_queue = [] { return new httplib::ThreadPool(1); };
  server_->set_read_timeout(5, 0);
  server_->set_write_timeout(5, 0);
  if (!server_->bind_to_port(host, port)) throw Error(EADDRINUSE, "cannot listen for metrics", listen);
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  log::info("metrics_listening", {{"address", listen}});
}

MetricsServer::~MetricsServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace sendense
