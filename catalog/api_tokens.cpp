// The HTTP service's rows: API tokens, the audit log of what it served, and
// detach requests for the daemon.
//
// A token's secret is 256 bits from getrandom(2); the catalog keeps only its
// SHA-256. A fast hash is enough for a random secret of that size (nothing
// to brute-force, unlike a password), and it lets authentication be one
// indexed lookup per HTTP request, which is what makes a revocation take
// effect at the next request.
#include <openssl/evp.h>
#include <sys/random.h>

#include <array>
#include <cerrno>
#include <ctime>

#include "catalog/catalog.h"
#include "catalog/sqlite_handle.h"
#include "readers/common/error.h"

namespace sendense {

namespace {

using sqlite::Statement;
using sqlite::time_column;
using sqlite::Transaction;

void random_bytes(unsigned char* out, size_t n) {
  while (n > 0) {
    const ssize_t got = ::getrandom(out, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(errno, "getrandom failed", "api token");
    }
    out += got;
    n -= static_cast<size_t>(got);
  }
}

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 15];
  }
  return s;
}

std::string base64url(const unsigned char* p, size_t n) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string s;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8) | p[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      s += kAlphabet[(acc >> bits) & 63];
    }
  }
  if (bits > 0) s += kAlphabet[(acc << (6 - bits)) & 63];
  return s;
}

std::string sha256_hex(const std::string& text) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(text.data(), text.size(), md.data(), &len, EVP_sha256(), nullptr) != 1)
    throw Error(EIO, "SHA-256 failed", "api token");
  return hex(md.data(), len);
}

std::string iso_or_empty(int64_t t) { return t == 0 ? std::string() : to_iso8601(t); }

constexpr const char* kTokenColumns =
    "SELECT k.id, COALESCE(t.name, ''), COALESCE(k.tenant_num, 0), k.label, k.created_at, k.expires_at, k.revoked_at "
    "FROM api_tokens k LEFT JOIN tenants t ON t.num = k.tenant_num";

ApiTokenRecord token_row(const Statement& st) {
  ApiTokenRecord r;
  r.id = st.column_text(0);
  r.tenant = st.column_text(1);
  r.tenant_num = st.column_int(2);
  r.label = st.column_text(3);
  r.created_at = time_column(st, 4);
  r.expires_at = time_column(st, 5);
  r.revoked_at = time_column(st, 6);
  return r;
}

}  // namespace

NewApiToken Catalog::create_api_token(const std::string& tenant, int64_t expires_at, const std::string& label) {
  std::array<unsigned char, 32> secret{};
  std::array<unsigned char, 8> id{};
  random_bytes(secret.data(), secret.size());
  random_bytes(id.data(), id.size());
  NewApiToken out;
  out.secret = "sdr_" + base64url(secret.data(), secret.size());
  out.record.id = "tok-" + hex(id.data(), id.size());
  out.record.label = label;
  out.record.created_at = static_cast<int64_t>(::time(nullptr));
  out.record.expires_at = expires_at;

  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  if (!tenant.empty()) {
    Statement st(db_, path_, "SELECT num, name FROM tenants WHERE name = ?1");
    st.bind(1, tenant);
    if (!st.step()) throw Error(ENOENT, "no tenant '" + tenant + "' in the catalog", path_);
    out.record.tenant_num = st.column_int(0);
    out.record.tenant = st.column_text(1);
  }
  Statement ins(db_, path_,
                "INSERT INTO api_tokens (id, tenant_num, hash, label, created_at, expires_at) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
  ins.bind(1, out.record.id);
  if (out.record.tenant_num != 0) ins.bind(2, out.record.tenant_num); else ins.bind_null(2);
  ins.bind(3, sha256_hex(out.secret)).bind(4, label).bind(5, to_iso8601(out.record.created_at));
  ins.bind_text_or_null(6, iso_or_empty(expires_at)).run();
  tx.commit();
  return out;
}

std::vector<ApiTokenRecord> Catalog::list_api_tokens() {
  std::lock_guard lock(mutex_);
  std::vector<ApiTokenRecord> out;
  Statement st(db_, path_, (std::string(kTokenColumns) + " ORDER BY k.created_at, k.id").c_str());
  while (st.step()) out.push_back(token_row(st));
  return out;
}

void Catalog::revoke_api_token(const std::string& id) {
  std::lock_guard lock(mutex_);
  Transaction tx(db_, path_);
  {
    Statement st(db_, path_, "SELECT revoked_at FROM api_tokens WHERE id = ?1");
    st.bind(1, id);
    if (!st.step()) throw Error(ENOENT, "no api token '" + id + "' in the catalog", path_);
    if (!st.column_is_null(0)) return;  // already revoked: keep the first time
  }
  Statement up(db_, path_, "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1");
  up.bind(1, id).bind(2, to_iso8601(static_cast<int64_t>(::time(nullptr)))).run();
  tx.commit();
}

std::optional<ApiTokenRecord> Catalog::authenticate_api_token(const std::string& secret, int64_t now) {
  if (secret.empty()) return std::nullopt;
  const std::string hash = sha256_hex(secret);
  std::lock_guard lock(mutex_);
  Statement st(db_, path_, (std::string(kTokenColumns) + " WHERE k.hash = ?1").c_str());
  st.bind(1, hash);
  if (!st.step()) return std::nullopt;
  ApiTokenRecord r = token_row(st);
  if (r.revoked() || r.expired_at(now)) return std::nullopt;
  return r;
}

void Catalog::add_audit(const AuditRecord& r) {
  std::lock_guard lock(mutex_);
  Statement ins(db_, path_,
                "INSERT INTO audit_log (at, tenant, token_id, action, backup_id, path, bytes, result) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  ins.bind(1, to_iso8601(r.at)).bind(2, r.tenant).bind(3, r.token_id).bind(4, r.action).bind(5, r.backup_id);
  ins.bind(6, r.path).bind(7, static_cast<int64_t>(r.bytes)).bind(8, r.result).run();
}

std::vector<AuditRecord> Catalog::list_audit(size_t limit) {
  std::lock_guard lock(mutex_);
  std::vector<AuditRecord> out;
  Statement st(db_, path_,
               "SELECT at, tenant, token_id, action, backup_id, path, bytes, result FROM audit_log "
               "ORDER BY id DESC LIMIT ?1");
  st.bind(1, static_cast<int64_t>(limit));
  while (st.step()) {
    AuditRecord r;
    r.at = time_column(st, 0);
    r.tenant = st.column_text(1);
    r.token_id = st.column_text(2);
    r.action = st.column_text(3);
    r.backup_id = st.column_text(4);
    r.path = st.column_text(5);
    r.bytes = static_cast<uint64_t>(st.column_int(6));
    r.result = st.column_text(7);
    out.push_back(std::move(r));
  }
  return out;
}

void Catalog::request_detach(const std::string& backup_id) {
  std::lock_guard lock(mutex_);
  Statement ins(db_, path_, "INSERT OR REPLACE INTO detach_requests (backup_id, requested_at) VALUES (?1, ?2)");
  ins.bind(1, backup_id).bind(2, to_iso8601(static_cast<int64_t>(::time(nullptr)))).run();
}

std::vector<std::string> Catalog::take_detach_requests() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  {
    // Polled every housekeeping tick: a read, and a write only when there is
    // something to take.
    Statement st(db_, path_, "SELECT backup_id FROM detach_requests ORDER BY requested_at");
    while (st.step()) out.push_back(st.column_text(0));
  }
  if (out.empty()) return out;
  Transaction tx(db_, path_);
  Statement del(db_, path_, "DELETE FROM detach_requests WHERE backup_id = ?1");
  for (const auto& id : out) {
    del.reset();
    del.bind(1, id).run();
  }
  tx.commit();
  return out;
}

}  // namespace sendense
