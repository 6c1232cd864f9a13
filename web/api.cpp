#include "web/api.h"

#include <fcntl.h>
#include <httplib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "readers/common/log.h"
#include "web/api_error.h"
#include "web/archive_stream.h"
#include "web/static_assets.h"

namespace sendense::web {
namespace {

using nlohmann::json;

constexpr size_t kReadChunk = 256 * 1024;
constexpr size_t kDefaultLimit = 1000, kMaxLimit = 10000;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status(), {{"error", e.what()}, {"code", e.code()}});
}

std::string iso_ns(const struct timespec& t) { return to_iso8601(t.tv_sec); }

std::string octal_mode(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

json entry_json(const EntryInfo& e) {
  json j = {{"name", e.name},
            {"type", e.type},
            {"size", static_cast<uint64_t>(e.st.st_size)},
            {"mode", octal_mode(e.st.st_mode)},
            {"uid", e.st.st_uid},
            {"gid", e.st.st_gid},
            {"mtime", iso_ns(e.st.st_mtim)}};
  if (e.type == "symlink") j["target"] = e.target;
  return j;
}

std::string base_name(const std::string& rel, const std::string& fallback) {
  if (rel.empty()) return fallback;
  auto slash = rel.rfind('/');
  return slash == std::string::npos ? rel : rel.substr(slash + 1);
}

uint64_t parse_uint(const std::string& s, const char* what) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
    throw bad_request(std::string("bad ") + what);
  return std::stoull(s);
}

std::string etag_of(const struct stat& st) {
  char buf[96];
  const unsigned long long ns =
      static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1000000000ull + static_cast<unsigned long long>(st.st_mtim.tv_nsec);
  std::snprintf(buf, sizeof buf, "\"%llx-%llx-%llx\"", static_cast<unsigned long long>(st.st_ino),
                static_cast<unsigned long long>(st.st_size), ns);
  return buf;
}

bool etag_matches(const std::string& header, const std::string& etag) {
  if (header.find('*') != std::string::npos) return true;
  size_t pos = 0;
  while (pos < header.size()) {
    size_t comma = header.find(',', pos);
    std::string tok = header.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t a = tok.find_first_not_of(" \t"), b = tok.find_last_not_of(" \t");
    tok = a == std::string::npos ? "" : tok.substr(a, b - a + 1);
    if (tok.rfind("W/", 0) == 0) tok = tok.substr(2);
    if (tok == etag) return true;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return false;
}

// One "bytes=A-B" range of a file of `size` bytes. nullopt: serve it all
// (no Range, or several ranges); throws 416 when unsatisfiable.
struct ByteRange {
  uint64_t first, length;
};
std::optional<ByteRange> parse_range(const std::string& header, uint64_t size) {
  if (header.empty()) return std::nullopt;
  if (header.rfind("bytes=", 0) != 0) return std::nullopt;
  std::string spec = header.substr(6);
  if (spec.find(',') != std::string::npos) return std::nullopt;
  auto dash = spec.find('-');
  if (dash == std::string::npos) throw ApiError(416, "bad_request", "bad range");
  std::string a = spec.substr(0, dash), b = spec.substr(dash + 1);
  auto num = [](const std::string& s) {
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
      throw ApiError(416, "bad_request", "bad range");
    return std::stoull(s);
  };
  if (a.empty()) {  // the last N bytes
    uint64_t n = num(b);
    if (n == 0 || size == 0) throw ApiError(416, "bad_request", "range not satisfiable");
    n = std::min<uint64_t>(n, size);
    return ByteRange{size - n, n};
  }
  uint64_t first = num(a);
  if (first >= size) throw ApiError(416, "bad_request", "range not satisfiable");
  uint64_t last = b.empty() ? size - 1 : std::min<uint64_t>(num(b), size - 1);
  if (last < first) throw ApiError(416, "bad_request", "range not satisfiable");
  return ByteRange{first, last - first + 1};
}

std::optional<std::string> cookie_token(const std::string& cookies) {
  size_t pos = 0;
  while (pos < cookies.size()) {
    size_t semi = cookies.find(';', pos);
    std::string c = cookies.substr(pos, semi == std::string::npos ? std::string::npos : semi - pos);
    size_t a = c.find_first_not_of(' ');
    if (a != std::string::npos && c.compare(a, 10, "sdr_token=") == 0) return c.substr(a + 10);
    if (semi == std::string::npos) break;
    pos = semi + 1;
  }
  return std::nullopt;
}

}  // namespace

std::string content_disposition(const std::string& name) {
  std::string ascii, pct;
  for (unsigned char c : name) {
    const bool safe = std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == ' ' || c == '+' || c == '(' || c == ')';
    ascii += safe && c < 0x80 ? static_cast<char>(c) : '_';
    if (std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == '~') {
      pct += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      pct += buf;
    }
  }
  return "attachment; filename=\"" + ascii + "\"; filename*=UTF-8''" + pct;
}

void Api::install(httplib::Server& server) {
  server.set_default_headers({{"Content-Security-Policy", "default-src 'self'"},
                              {"X-Content-Type-Options", "nosniff"},
                              {"Referrer-Policy", "no-referrer"}});
  // Ranges are ours (download): httplib's own would apply them a second time.
  server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response&) {
    const_cast<httplib::Request&>(req).ranges.clear();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty() || res.status == 416) return;
    const char* code = res.status == 404 ? "not_found" : res.status == 400 ? "bad_request" : "internal";
    const json body = {{"error", res.status == 404 ? "no such resource" : "request failed"}, {"code", code}};
    res.set_content(body.dump(), "application/json");
  });

  // Runs a handler with the caller authenticated; ApiError becomes its JSON.
  using Authed = std::function<void(const Caller&, const httplib::Request&, httplib::Response&)>;
  auto guarded = [this](Authed fn) {
    return [this, fn](const httplib::Request& req, httplib::Response& res) {
      try {
        std::string token;
        const std::string auth = req.get_header_value("Authorization");
        if (auth.rfind("Bearer ", 0) == 0) token = auth.substr(7);
        else if (auto c = cookie_token(req.get_header_value("Cookie"))) token = *c;
        if (token.empty()) throw unauthorized();
        auto caller = broker_.authenticate(token);
        if (!caller) throw unauthorized();
        if (!tree_.tree_is_up()) throw ApiError(503, "unavailable", "the restore tree is not mounted");
        fn(*caller, req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        log::error("web_request_failed", {{"path", req.path}, {"error", e.what()}});
        send_json(res, 500, {{"error", "internal error"}, {"code", "internal"}});
      }
    };
  };

  // The caller's backup `id` (404 if it is not one of theirs).
  auto find_backup = [this](const Caller& c, const std::string& id) {
    json all = broker_.backups(c);
    for (const auto& b : all.at("backups"))
      if (b.at("id") == id) return b;
    throw not_found();
  };
  auto open_backup = [this, find_backup](const Caller& c, const std::string& id) {
    find_backup(c, id);
    UniqueFd scope = tree_.open_scope(c.tenant);
    return tree_.open_backup(scope.get(), id, !c.is_operator());
  };

  server.Get("/api/v1/whoami", guarded([](const Caller& c, const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"tenant", c.tenant ? json(*c.tenant) : json(nullptr)},
                         {"operator", c.is_operator()},
                         {"token_id", c.token_id}});
  }));

  server.Get("/api/v1/backups", guarded([this](const Caller& c, const httplib::Request& req, httplib::Response& res) {
    json all = broker_.backups(c);
    if (req.has_param("vm")) {
      const std::string vm = req.get_param_value("vm");
      json kept = json::array();
      for (const auto& b : all.at("backups"))
        if (b.at("vm") == vm) kept.push_back(b);
      all["backups"] = kept;
    }
    send_json(res, 200, all);
  }));

  server.Get(R"(/api/v1/backups/([^/]+)/files)",
             guarded([open_backup](const Caller& c, const httplib::Request& req, httplib::Response& res) {
               const std::string id = req.matches[1];
               const std::string rel = relative_api_path(req.get_param_value("path"));
               const uint64_t offset = req.has_param("offset") ? parse_uint(req.get_param_value("offset"), "offset") : 0;
               uint64_t limit = req.has_param("limit") ? parse_uint(req.get_param_value("limit"), "limit") : kDefaultLimit;
               if (limit == 0 || limit > kMaxLimit) throw bad_request("limit must be 1..10000");
               UniqueFd backup = open_backup(c, id);
               UniqueFd dir = TreeAccess::open_beneath(backup.get(), rel, O_PATH | O_DIRECTORY);
               auto entries = list_folder(dir.get());
               json list = json::array();
               for (uint64_t i = offset; i < entries.size() && i < offset + limit; ++i) list.push_back(entry_json(entries[i]));
               send_json(res, 200, {{"path", "/" + rel}, {"entries", list}, {"offset", offset}, {"total", entries.size()}});
             }));

  server.Get(R"(/api/v1/backups/([^/]+)/stat)",
             guarded([open_backup](const Caller& c, const httplib::Request& req, httplib::Response& res) {
               const std::string id = req.matches[1];
               const std::string rel = relative_api_path(req.get_param_value("path"));
               UniqueFd backup = open_backup(c, id);
               UniqueFd fd = TreeAccess::open_beneath(backup.get(), rel, O_PATH | O_NOFOLLOW);
               json j = entry_json(stat_fd(fd.get(), base_name(rel, id)));
               j["path"] = "/" + rel;
               send_json(res, 200, j);
             }));

  server.Get(R"(/api/v1/backups/([^/]+)/download)",
             guarded([this, open_backup](const Caller& c, const httplib::Request& req, httplib::Response& res) {
               const std::string id = req.matches[1];
               const std::string rel = relative_api_path(req.get_param_value("path"));
               UniqueFd backup = open_backup(c, id);
               UniqueFd probe = TreeAccess::open_beneath(backup.get(), rel, O_PATH | O_NOFOLLOW);
               EntryInfo info = stat_fd(probe.get(), base_name(rel, id));
               if (info.type != "file") throw bad_request("not a regular file");
               auto fd = std::make_shared<UniqueFd>(TreeAccess::open_beneath(backup.get(), rel, O_RDONLY));
               struct stat st {};
               if (::fstat(fd->get(), &st) != 0 || st.st_ino != info.st.st_ino) throw not_found();
               const uint64_t size = static_cast<uint64_t>(st.st_size);
               const std::string etag = etag_of(st);
               res.set_header("ETag", etag);
               res.set_header("Accept-Ranges", "bytes");
               res.set_header("Cache-Control", "private, no-cache");
               if (req.has_header("If-None-Match") && etag_matches(req.get_header_value("If-None-Match"), etag)) {
                 res.status = 304;
                 return;
               }
               std::optional<ByteRange> range;
               try {
                 range = parse_range(req.get_header_value("Range"), size);
               } catch (const ApiError& e) {
                 res.set_header("Content-Range", "bytes */" + std::to_string(size));
                 send_error(res, e);
                 return;
               }
               const uint64_t first = range ? range->first : 0, length = range ? range->length : size;
               if (range) {
                 res.status = 206;
                 res.set_header("Content-Range", "bytes " + std::to_string(first) + "-" + std::to_string(first + length - 1) +
                                                     "/" + std::to_string(size));
               }
               res.set_header("Content-Disposition", content_disposition(info.name));
               struct State {
                 std::atomic<uint64_t> sent{0};
               };
               auto state = std::make_shared<State>();
               const std::string bucket = c.audit_tenant();
               res.set_content_provider(
                   length, "application/octet-stream",
                   [this, fd, first, state, bucket](size_t offset, size_t left, httplib::DataSink& sink) {
                     std::string buf(std::min<size_t>(left, kReadChunk), '\0');
                     ssize_t n;
                     do n = ::pread(fd->get(), buf.data(), buf.size(), static_cast<off_t>(first + offset));
                     while (n < 0 && errno == EINTR);
                     if (n <= 0) return false;
                     bandwidth_.acquire(bucket, static_cast<uint64_t>(n));
                     if (!sink.write(buf.data(), static_cast<size_t>(n))) return false;
                     state->sent += static_cast<uint64_t>(n);
                     return true;
                   },
                   [this, c, id, rel, state, length](bool success) {
                     const uint64_t sent = state->sent.load();
                     const bool ok = success && sent == length;
                     try {
                       broker_.audit(c, "download", id, "/" + rel, sent, ok ? "ok" : "client-closed");
                     } catch (const std::exception& e) {
                       log::error("web_audit_failed", {{"error", e.what()}});
                     }
                   });
             }));

  server.Get(R"(/api/v1/backups/([^/]+)/archive)",
             guarded([this, open_backup](const Caller& c, const httplib::Request& req, httplib::Response& res) {
               const std::string id = req.matches[1];
               const std::string rel = relative_api_path(req.get_param_value("path"));
               const std::string format = req.has_param("format") ? req.get_param_value("format") : "zip";
               if (!valid_archive_format(format)) throw bad_request("format must be zip, tar or tar.zst");
               UniqueFd backup = open_backup(c, id);
               auto folder = std::make_shared<UniqueFd>(TreeAccess::open_beneath(backup.get(), rel, O_PATH | O_DIRECTORY));
               std::shared_ptr<Job> job =
                   jobs_.start(c.audit_tenant(), id, "/" + rel, format, req.get_param_value("job"));
               if (!job) throw ApiError(429, "too_many_jobs", "too many archive jobs running for this tenant");
               const std::string top = base_name(rel, id);
               auto plan = std::make_shared<ArchivePlan>();
               try {
                 *plan = plan_archive(tree_, folder->get(), top);
               } catch (...) {
                 jobs_.finish(*job, kFailed);
                 throw;
               }
               job->files_total = plan->files;
               job->bytes_total = plan->bytes;
               log::info("web_archive_start", {{"job", job->id}, {"backup", id}, {"path", "/" + rel}, {"format", format},
                                               {"files", std::to_string(plan->files)}, {"bytes", std::to_string(plan->bytes)}});
               res.set_header("X-Sendense-Job", job->id);
               res.set_header("X-Sendense-Total-Bytes", std::to_string(plan->bytes));
               res.set_header("Content-Disposition", content_disposition(top + "." + format));
               struct State {
                 std::atomic<bool> ran{false};
                 StreamOutcome outcome;
               };
               auto state = std::make_shared<State>();
               const std::string bucket = c.audit_tenant();
               res.set_chunked_content_provider(
                   archive_content_type(format),
                   [this, folder, plan, format, job, state, bucket](size_t, httplib::DataSink& sink) {
                     state->ran = true;
                     state->outcome = stream_archive(
                         tree_, folder->get(), *plan, format, *job,
                         [&sink](const char* d, size_t n) { return sink.write(d, n); },
                         [this, bucket](uint64_t n) { bandwidth_.acquire(bucket, n); });
                     if (state->outcome.result != StreamResult::ok) return false;
                     sink.done();
                     return true;
                   },
                   [this, c, id, rel, job, state](bool success) {
                     const StreamOutcome& o = state->outcome;
                     std::string result = "ok";
                     JobState js = kDone;
                     if (!state->ran || o.result == StreamResult::client_closed || (!success && o.result == StreamResult::ok)) {
                       result = "client-closed";
                       js = kCancelled;
                     } else if (o.result == StreamResult::error) {
                       result = "error: " + o.error;
                       js = kFailed;
                     }
                     jobs_.finish(*job, js);
                     log::info("web_archive_end", {{"job", job->id}, {"result", result}, {"bytes", std::to_string(o.bytes_sent)}});
                     try {
                       broker_.audit(c, "archive", id, "/" + rel, o.bytes_sent, result);
                     } catch (const std::exception& e) {
                       log::error("web_audit_failed", {{"error", e.what()}});
                     }
                   });
             }));

  server.Get("/api/v1/jobs", guarded([this](const Caller& c, const httplib::Request&, httplib::Response& res) {
    json list = json::array();
    for (const auto& j : jobs_.list(c.audit_tenant())) list.push_back(j->to_json());
    send_json(res, 200, {{"jobs", list}});
  }));
  server.Get(R"(/api/v1/jobs/([^/]+))", guarded([this](const Caller& c, const httplib::Request& req, httplib::Response& res) {
    auto job = jobs_.find(c.audit_tenant(), req.matches[1]);
    if (!job) throw not_found();
    send_json(res, 200, job->to_json());
  }));

  server.Get("/api/v1/restore", guarded([this](const Caller& c, const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, broker_.mounts(c));
  }));

  server.Post("/api/v1/restore/mount",
              guarded([this, open_backup](const Caller& c, const httplib::Request& req, httplib::Response& res) {
                json body = json::parse(req.body, nullptr, false);
                if (body.is_discarded() || !body.is_object() || !body.contains("backup_id") || !body["backup_id"].is_string())
                  throw bad_request("expected {\"backup_id\": \"...\"}");
                const std::string id = body["backup_id"].get<std::string>();
                // Looking inside the backup folder attaches it.
                UniqueFd backup = open_backup(c, id);
                list_folder(backup.get());
                const std::string mount_path = c.is_operator() ? "/" + id : "/tenants/" + *c.tenant + "/" + id;
                auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
                while (true) {
                  const json rows = broker_.mounts(c);
                  for (const auto& m : rows.at("mounts")) {
                    if (m.at("backup_id") != id || m.at("status") == "failed") continue;
                    json out = {{"mount_id", m.at("mount_id")}, {"backup_id", id}, {"mount_path", mount_path},
                                {"status", m.at("status")}, {"volumes", m.at("volumes")}};
                    if (m.at("status") == "mounted") return send_json(res, 200, out);
                  }
                  if (std::chrono::steady_clock::now() > deadline)
                    throw ApiError(503, "unavailable", "the backup did not attach in time");
                  std::this_thread::sleep_for(std::chrono::milliseconds(100));
                }
              }));
  server.Delete(R"(/api/v1/restore/([^/]+))", guarded([this](const Caller& c, const httplib::Request& req, httplib::Response& res) {
    if (!broker_.detach(c, req.matches[1])) throw not_found();
    res.status = 204;
  }));

  server.Post("/api/v1/session", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object() || !body.contains("token") || !body["token"].is_string())
        throw bad_request("expected {\"token\": \"...\"}");
      const std::string token = body["token"].get<std::string>();
      if (token.find_first_of(";, \t\r\n") != std::string::npos || !broker_.authenticate(token)) throw unauthorized();
      res.set_header("Set-Cookie",
                     "sdr_token=" + token + "; HttpOnly; SameSite=Strict; Path=/" + (tls_ ? "; Secure" : ""));
      res.status = 204;
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const std::exception& e) {
      log::error("web_request_failed", {{"path", req.path}, {"error", e.what()}});
      send_json(res, 500, {{"error", "internal error"}, {"code", "internal"}});
    }
  });
  server.Delete("/api/v1/session", [this](const httplib::Request&, httplib::Response& res) {
    res.set_header("Set-Cookie", std::string("sdr_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0") + (tls_ ? "; Secure" : ""));
    res.status = 204;
  });

  auto asset = [](const std::string& name) {
    return [name](const httplib::Request&, httplib::Response& res) {
      const StaticAsset* a = find_static_asset(name);
      if (!a) {
        send_error(res, not_found());
        return;
      }
      res.set_content(std::string(a->body), std::string(a->content_type).c_str());
    };
  };
  server.Get("/", asset("index.html"));
  server.Get("/index.html", asset("index.html"));
  server.Get("/static/app.js", asset("app.js"));
  server.Get("/static/style.css", asset("style.css"));
}

}  // namespace sendense::web
