#include "web/jobs.h"

#include <sys/random.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

#include "catalog/catalog.h"

namespace sendense::web {
namespace {

constexpr int64_t kKeepSeconds = 600;

std::string new_job_id() {
  unsigned char b[8] = {};
  if (::getrandom(b, sizeof b, 0) != sizeof b) {
    static std::atomic<uint64_t> counter{0};
    uint64_t c = ++counter ^ static_cast<uint64_t>(::time(nullptr)) << 20;
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(c >> (8 * i));
  }
  char out[32];
  std::snprintf(out, sizeof out, "job-%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
  return out;
}

const char* state_name(int s) {
  switch (s) {
    case kRunning: return "running";
    case kDone: return "done";
    case kFailed: return "failed";
    default: return "cancelled";
  }
}

}  // namespace

nlohmann::json Job::to_json() const {
  const int64_t ended = ended_at.load();
  return {{"id", id},
          {"backup_id", backup_id},
          {"path", path},
          {"format", format},
          {"state", state_name(state.load())},
          {"files_done", files_done.load()},
          {"files_total", files_total.load()},
          {"bytes_done", bytes_done.load()},
          {"bytes_total", bytes_total.load()},
          {"started_at", to_iso8601(started_at)},
          {"ended_at", ended ? nlohmann::json(to_iso8601(ended)) : nlohmann::json(nullptr)}};
}

bool valid_proposed_job_id(const std::string& id) {
  if (id.size() < 16 || id.size() > 32) return false;
  for (char ch : id)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-') return false;
  return true;
}

std::shared_ptr<Job> JobTable::start(const std::string& owner, const std::string& backup_id, const std::string& path,
                                     const std::string& format, const std::string& proposed_id) {
  std::lock_guard lock(mutex_);
  const int64_t now = ::time(nullptr);
  prune_locked(now);
  if (running_[owner] >= limit_) return nullptr;
  auto job = std::make_shared<Job>();
  // A page polls progress before the response headers arrive, so it names
  // the job itself; an id in use (by anyone: ids are one namespace) or
  // malformed is replaced, never shared.
  job->id = valid_proposed_job_id(proposed_id) && !jobs_.contains(proposed_id) ? proposed_id : new_job_id();
  job->owner = owner;
  job->backup_id = backup_id;
  job->path = path;
  job->format = format;
  job->started_at = now;
  jobs_[job->id] = job;
  ++running_[owner];
  return job;
}

void JobTable::finish(Job& job, JobState state) {
  std::lock_guard lock(mutex_);
  if (job.state.load() != kRunning) return;
  job.state = state;
  job.ended_at = ::time(nullptr);
  auto it = running_.find(job.owner);
  if (it != running_.end() && it->second > 0) --it->second;
}

std::shared_ptr<Job> JobTable::find(const std::string& owner, const std::string& id) {
  std::lock_guard lock(mutex_);
  prune_locked(::time(nullptr));
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second->owner != owner) return nullptr;
  return it->second;
}

std::vector<std::shared_ptr<Job>> JobTable::list(const std::string& owner) {
  std::lock_guard lock(mutex_);
  prune_locked(::time(nullptr));
  std::vector<std::shared_ptr<Job>> out;
  for (const auto& [id, j] : jobs_)
    if (j->owner == owner) out.push_back(j);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a->started_at < b->started_at; });
  return out;
}

unsigned JobTable::running() {
  std::lock_guard lock(mutex_);
  unsigned n = 0;
  for (const auto& [o, c] : running_) n += c;
  return n;
}

void JobTable::prune_locked(int64_t now) {
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    const int64_t ended = it->second->ended_at.load();
    if (ended != 0 && now - ended > kKeepSeconds) it = jobs_.erase(it);
    else ++it;
  }
}

}  // namespace sendense::web
