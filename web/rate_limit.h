// Per-tenant bandwidth: one token bucket per tenant (the operator is one
// more key), shared by every download and archive of that tenant. A rate of
// 0 is unlimited.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace sendense::web {

class TokenBucket {
 public:
  explicit TokenBucket(uint64_t bytes_per_second);
  // Waits until `bytes` may be sent (at most one second's worth per call:
  // callers send in chunks smaller than that).
  void acquire(uint64_t bytes);

 private:
  const double rate_;
  std::mutex mutex_;
  double tokens_;
  std::chrono::steady_clock::time_point last_;
};

class Bandwidth {
 public:
  explicit Bandwidth(uint64_t bytes_per_second) : rate_(bytes_per_second) {}
  bool limited() const { return rate_ > 0; }
  uint64_t rate() const { return rate_; }
  // Waits for `bytes` of `tenant`'s bucket; returns at once when unlimited.
  void acquire(const std::string& tenant, uint64_t bytes);

 private:
  const uint64_t rate_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<TokenBucket>> buckets_;
};

}  // namespace sendense::web
