// The daemon's counters, rendered in the Prometheus text exposition format
// (version 0.0.4) by the --metrics-listen endpoint (fuse/metrics_server.h).
//
// Every label set is fixed when the metric is made, so the hot path (one
// count per FUSE request) is an atomic increment with no lock and no
// allocation; a value outside the set is counted under "other".
//
// Memory: only the whole process's resident size is measured. Per backup it
// cannot be: the attached backups share one heap, and what they cost is
// mostly the kernel's page cache, which belongs to no process.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sendense {

// A counter per label value, values fixed at construction.
class LabeledCounter {
 public:
  LabeledCounter(std::string name, std::string help, std::string label, std::vector<std::string> values);
  void add(std::string_view value, uint64_t n = 1);
  void render(std::string& out) const;

 private:
  std::string name_, help_, label_;
  std::vector<std::string> values_;  // the last one is "other"
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
};

// Seconds, with fixed upper bounds; the sum is kept in microseconds.
class Histogram {
 public:
  Histogram(std::string name, std::string help, std::vector<double> bounds);
  void observe(double seconds);
  void render(std::string& out) const;

 private:
  std::string name_, help_;
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // not cumulative; one more for +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

class Metrics {
 public:
  Metrics();

  // The FUSE edge: one request of `op`; `bytes` of data returned by it.
  void fuse_request(std::string_view op) { fuse_requests_.add(op); }
  void fuse_bytes(std::string_view op, uint64_t bytes) { fuse_bytes_.add(op, bytes); }

  // The attach lifecycle.
  void attached(double seconds);
  void attach_failed() { attaches_.add("failed"); }
  void detached(std::string_view reason) { detaches_.add(reason); }
  // `cause` is the log event naming the failure: attach_failed, volume_failed,
  // attach_stuck, busy, op_failed, catalog_error.
  void failure(std::string_view cause) { failures_.add(cause); }

  void catalog_reloaded(double seconds) { catalog_reload_.observe(seconds); }

  // The gauge of attached backups is read when rendering.
  void set_attached_gauge(std::function<size_t()> attached_now) { attached_now_ = std::move(attached_now); }

  std::string render() const;

 private:
  LabeledCounter fuse_requests_, fuse_bytes_, attaches_, detaches_, failures_;
  Histogram attach_latency_, catalog_reload_;
  std::function<size_t()> attached_now_;
};

}  // namespace sendense
