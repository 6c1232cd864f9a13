#include "catalog/sqlite_handle.h"

#include "catalog/catalog.h"
#include "readers/common/error.h"

namespace sendense::sqlite {

void fail(sqlite3* db, const std::string& db_path, const std::string& what) {
  const char* msg = db ? sqlite3_errmsg(db) : "out of memory";
  throw Error(EIO, what + ": " + (msg ? msg : "unknown SQLite error"), db_path);
}

void exec(sqlite3* db, const std::string& db_path, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    throw Error(EIO, std::string("sqlite: ") + msg + " (in: " + std::string(sql).substr(0, 60) + ")", db_path);
  }
}

Statement::Statement(sqlite3* db, const std::string& db_path, const char* sql)
    : db_(db), db_path_(db_path), sql_(sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    sqlite3_finalize(raw);
    fail(db_, db_path_, "sqlite prepare");
  }
  stmt_.reset(raw);
}

Statement& Statement::bind(int index, int64_t value) {
  if (sqlite3_bind_int64(stmt_.get(), index, value) != SQLITE_OK) fail(db_, db_path_, "sqlite bind");
  return *this;
}

Statement& Statement::bind(int index, const std::string& value) {
  if (sqlite3_bind_text(stmt_.get(), index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT) !=
      SQLITE_OK)
    fail(db_, db_path_, "sqlite bind");
  return *this;
}

Statement& Statement::bind_text_or_null(int index, const std::string& value) {
  return value.empty() ? bind_null(index) : bind(index, value);
}

Statement& Statement::bind_null(int index) {
  if (sqlite3_bind_null(stmt_.get(), index) != SQLITE_OK) fail(db_, db_path_, "sqlite bind");
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(db_, db_path_, "sqlite");
}

void Statement::run() {
  while (step()) {
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
}

int64_t Statement::column_int(int col) const { return sqlite3_column_int64(stmt_.get(), col); }

std::string Statement::column_text(int col) const {
  const auto* p = sqlite3_column_text(stmt_.get(), col);
  if (!p) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_.get(), col)));
}

bool Statement::column_is_null(int col) const { return sqlite3_column_type(stmt_.get(), col) == SQLITE_NULL; }

Transaction::Transaction(sqlite3* db, const std::string& db_path) : db_(db), db_path_(db_path) {
  exec(db_, db_path_, "BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
  if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  exec(db_, db_path_, "COMMIT");
  done_ = true;
}

int64_t time_column(const Statement& st, int col) {
  if (st.column_is_null(col)) return 0;
  return parse_iso8601(st.column_text(col)).value_or(0);
}

}  // namespace sendense::sqlite
