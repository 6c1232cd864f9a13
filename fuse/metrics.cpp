#include "fuse/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace sendense {

namespace {

void header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

// Shortest form that reads back exactly enough for a bucket bound or a sum.
std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// The operations fuse/fuse_ops.cpp answers through checked(); every write
// operation is one label (they all answer EROFS).
const std::vector<std::string> kFuseOps = {"lookup", "getattr", "readlink", "opendir", "readdir", "readdirplus",
                                           "open", "read", "release", "statfs", "getxattr", "listxattr",
                                           "write_refused", "prefetch", "read_spliced", "other"};

uint64_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  in >> size >> resident;
  return resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

LabeledCounter::LabeledCounter(std::string name, std::string help, std::string label, std::vector<std::string> values)
    : name_(std::move(name)), help_(std::move(help)), label_(std::move(label)), values_(std::move(values)) {
  if (values_.empty() || values_.back() != "other") values_.emplace_back("other");
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(values_.size());
  for (size_t i = 0; i < values_.size(); ++i) counts_[i] = 0;
}

void LabeledCounter::add(std::string_view value, uint64_t n) {
  size_t i = 0;
  while (i + 1 < values_.size() && values_[i] != value) ++i;
  counts_[i].fetch_add(n, std::memory_order_relaxed);
}

void LabeledCounter::render(std::string& out) const {
  header(out, name_, help_, "counter");
  for (size_t i = 0; i < values_.size(); ++i)
    out += name_ + "{" + label_ + "=\"" + values_[i] + "\"} " +
           std::to_string(counts_[i].load(std::memory_order_relaxed)) + "\n";
}

Histogram::Histogram(std::string name, std::string help, std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), bounds_(std::move(bounds)) {
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i] = 0;
}

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

void Histogram::render(std::string& out) const {
  header(out, name_, help_, "histogram");
  // Read the buckets first: the count then is at least their total, never
  // less (a scrape racing an observe may see the count ahead by one).
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out += name_ + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += buckets_[bounds_.size()].load(std::memory_order_relaxed);
  const uint64_t count = std::max(cumulative, count_.load(std::memory_order_relaxed));
  out += name_ + "_bucket{le=\"+Inf\"} " + std::to_string(count) + "\n";
  out += name_ + "_sum " + number(static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6) + "\n";
  out += name_ + "_count " + std::to_string(count) + "\n";
}

Metrics::Metrics()
    : fuse_requests_("sendense_fuse_requests_total", "FUSE requests answered, by operation.", "op", kFuseOps),
      fuse_bytes_("sendense_fuse_read_bytes_total",
                  "Bytes returned to the kernel, by operation (file data for read; listings, link targets and "
                  "xattrs for the others).",
                  "op", kFuseOps),
      attaches_("sendense_attaches_total", "Backup attaches, by result.", "result", {"ok", "failed"}),
      detaches_("sendense_detaches_total", "Backup detaches, by reason.", "reason",
                {"idle", "evict", "removed", "shutdown"}),
      failures_("sendense_failures_total", "Failures, by cause (the log event that reports them).", "cause",
                {"attach_failed", "volume_failed", "attach_stuck", "busy", "op_failed", "catalog_error"}),
      attach_latency_("sendense_attach_duration_seconds",
                      "Time to attach a backup (open the image chain, partitions and filesystems).",
                      {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      catalog_reload_("sendense_catalog_reload_duration_seconds", "Time to re-read the catalog (every 2 s).",
                      {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}) {}

void Metrics::attached(double seconds) {
  attaches_.add("ok");
  attach_latency_.observe(seconds);
}

std::string Metrics::render() const {
  std::string out;
  header(out, "sendense_backups_attached", "Backups attached now.", "gauge");
  out += "sendense_backups_attached " + std::to_string(attached_now_ ? attached_now_() : 0) + "\n";
  attaches_.render(out);
  detaches_.render(out);
  attach_latency_.render(out);
  failures_.render(out);
  fuse_requests_.render(out);
  fuse_bytes_.render(out);
  catalog_reload_.render(out);
  header(out, "sendense_process_resident_memory_bytes",
         "Resident memory of the whole daemon (not measurable per backup: one shared heap, and the page cache "
         "belongs to no process).",
         "gauge");
  out += "sendense_process_resident_memory_bytes " + std::to_string(resident_bytes()) + "\n";
  return out;
}

}  // namespace sendense
