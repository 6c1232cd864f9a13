#include "web/rate_limit.h"

#include <algorithm>
#include <thread>

namespace sendense::web {

TokenBucket::TokenBucket(uint64_t bytes_per_second)
    : rate_(static_cast<double>(bytes_per_second)), tokens_(0), last_(std::chrono::steady_clock::now()) {}

void TokenBucket::acquire(uint64_t bytes) {
  std::chrono::duration<double> wait{};
  {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    // Refill, at most one second's worth of burst.
    tokens_ = std::min(rate_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
    last_ = now;
    tokens_ -= static_cast<double>(bytes);  // may go negative: the debt is this caller's wait
    if (tokens_ < 0) wait = std::chrono::duration<double>(-tokens_ / rate_);
  }
  if (wait.count() > 0) std::this_thread::sleep_for(wait);
}

void Bandwidth::acquire(const std::string& tenant, uint64_t bytes) {
  if (rate_ == 0) return;
  std::shared_ptr<TokenBucket> bucket;
  {
    std::lock_guard lock(mutex_);
    auto& b = buckets_[tenant];
    if (!b) b = std::make_shared<TokenBucket>(rate_);
    bucket = b;
  }
  bucket->acquire(bytes);
}

}  // namespace sendense::web
