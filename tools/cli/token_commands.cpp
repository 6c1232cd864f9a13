// token create / list / revoke: the API tokens of the HTTP service
// (sendense-restore-web). The secret is printed once, on stdout alone, so a
// script can capture it; the catalog keeps only its hash.
#include <charconv>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "catalog/catalog.h"
#include "readers/common/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/format.h"

namespace sendense::cli {

namespace {

// --expires: "30d", "12h", "45m" from now, or an ISO-8601 time.
int64_t expires_option(const Args& args, int64_t now) {
  const auto v = args.value("--expires");
  if (!v) return 0;
  if (!v->empty()) {
    const char unit = v->back();
    int64_t scale = unit == 'd' ? 86400 : unit == 'h' ? 3600 : unit == 'm' ? 60 : 0;
    if (scale != 0) {
      int64_t n = 0;
      const char* end = v->data() + v->size() - 1;
      const auto [ptr, ec] = std::from_chars(v->data(), end, n);
      if (ec == std::errc() && ptr == end && n > 0 && n <= 36500LL * 86400 / scale) return now + n * scale;
    }
  }
  if (auto t = parse_iso8601(*v)) {
    if (*t <= now) throw UsageError("--expires " + *v + " is in the past");
    return *t;
  }
  throw UsageError("--expires takes a duration (30d, 12h, 45m) or a time (2027-01-31T00:00Z), not '" + *v + "'");
}

std::string time_or_dash(int64_t t) { return t == 0 ? "-" : to_iso8601(t); }

std::string state(const ApiTokenRecord& t, int64_t now) {
  if (t.revoked()) return "revoked";
  if (t.expired_at(now)) return "expired";
  return "valid";
}

}  // namespace

int token_create(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--tenant", "--expires", "--label", "--catalog"}, {"--operator"});
  expect_positionals(args, {});
  const auto tenant = args.value("--tenant");
  if (tenant.has_value() == args.flag("--operator"))
    throw UsageError("token create needs exactly one of --tenant NAME (that tenant's backups) or --operator (the whole tree)");
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  const int64_t expires = expires_option(args, now);
  const std::string name = tenant ? require_tenant(catalog, *tenant).name : std::string();
  const NewApiToken t = catalog.create_api_token(name, expires, args.value_or("--label", ""));
  std::cout << t.secret << "\n";
  std::cerr << "token " << t.record.id << " for " << (name.empty() ? "the operator" : "tenant " + name)
            << ", expires " << (expires == 0 ? "never" : to_iso8601(expires))
            << ": the secret above is shown only this once\n";
  return 0;
}

int token_list(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {"--json"});
  expect_positionals(args, {});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  const auto tokens = catalog.list_api_tokens();
  if (args.flag("--json")) {
    nlohmann::json out = nlohmann::json::array();
    auto time_json = [](int64_t t) { return t == 0 ? nlohmann::json(nullptr) : nlohmann::json(to_iso8601(t)); };
    for (const ApiTokenRecord& t : tokens)
      out.push_back({{"id", t.id},
                     {"tenant", t.tenant.empty() ? nlohmann::json(nullptr) : nlohmann::json(t.tenant)},
                     {"operator", t.tenant.empty()},
                     {"label", t.label},
                     {"created_at", time_json(t.created_at)},
                     {"expires_at", time_json(t.expires_at)},
                     {"revoked_at", time_json(t.revoked_at)},
                     {"state", state(t, now)}});
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows{{"ID", "TENANT", "LABEL", "CREATED", "EXPIRES", "STATE"}};
  for (const ApiTokenRecord& t : tokens)
    rows.push_back({t.id, t.tenant.empty() ? "(operator)" : t.tenant, t.label.empty() ? "-" : t.label,
                    to_iso8601(t.created_at), time_or_dash(t.expires_at), state(t, now)});
  std::cout << table(rows);
  return 0;
}

int token_revoke(int argc, char** argv, int first) {
  const Args args = parse_args(argc, argv, first, {"--catalog"}, {});
  expect_positionals(args, {"ID"});
  const std::string db = args.value_or("--catalog", kDefaultCatalog);
  require_existing_catalog(db);
  Catalog catalog(db);
  catalog.revoke_api_token(args.positional[0]);
  std::cout << "revoked " << args.positional[0] << "\n";
  return 0;
}

}  // namespace sendense::cli
