// Archive jobs: progress of each archive stream and the per-tenant limit on
// concurrent ones. A job is kept for 10 minutes after it ended.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sendense::web {

struct Job {
  std::string id;            // "job-" + 16 hex, or the client's proposal
  std::string owner;         // tenant name, "" for the operator
  std::string backup_id, path, format;
  int64_t started_at = 0;
  std::atomic<int64_t> ended_at{0};
  std::atomic<uint64_t> files_done{0}, files_total{0}, bytes_done{0}, bytes_total{0};
  std::atomic<int> state{0};  // JobState

  nlohmann::json to_json() const;
};

enum JobState { kRunning = 0, kDone, kFailed, kCancelled };

class JobTable {
 public:
  explicit JobTable(unsigned per_tenant_limit) : limit_(per_tenant_limit) {}

  // A new running job of `owner`; nullptr when `owner` already runs the limit.
  // `proposed_id` (the client's `job=`, 16-32 of [A-Za-z0-9_-]) is the job's
  // id when valid and unused; else a fresh "job-" + 16 hex.
  std::shared_ptr<Job> start(const std::string& owner, const std::string& backup_id, const std::string& path,
                             const std::string& format, const std::string& proposed_id = {});
  // Ends a running job (state done/failed/cancelled), freeing its slot.
  void finish(Job& job, JobState state);

  std::shared_ptr<Job> find(const std::string& owner, const std::string& id);
  std::vector<std::shared_ptr<Job>> list(const std::string& owner);  // oldest first
  unsigned running() ;  // all owners

 private:
  void prune_locked(int64_t now);
  const unsigned limit_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // by id
  std::map<std::string, unsigned> running_;           // by owner
};

}  // namespace sendense::web
