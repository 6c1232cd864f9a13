// RAII over the SQLite C API, private to catalog/: an owned connection, a
// prepared statement, and a transaction that rolls back unless committed.
// Every failure throws Error(EIO) naming the database file and carrying
// SQLite's own message.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace sendense::sqlite {

struct DbCloser {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};

// Throws Error(EIO, "<what>: <sqlite message>", db_path).
[[noreturn]] void fail(sqlite3* db, const std::string& db_path, const std::string& what);

// Runs one or more statements without results.
void exec(sqlite3* db, const std::string& db_path, const char* sql);

class Statement {
 public:
  Statement(sqlite3* db, const std::string& db_path, const char* sql);

  // Binding: 1-based like SQLite. An empty optional / text_or_null("") binds NULL.
  Statement& bind(int index, int64_t value);
  Statement& bind(int index, const std::string& value);
  Statement& bind_text_or_null(int index, const std::string& value);
  Statement& bind_null(int index);

  // Steps once: true when a row is available, false when done.
  bool step();
  // Steps to completion (INSERT/UPDATE/DELETE).
  void run();
  // Ready to run again with new bindings.
  void reset();

  int64_t column_int(int col) const;
  std::string column_text(int col) const;  // "" for NULL
  bool column_is_null(int col) const;

 private:
  sqlite3* db_;
  const std::string& db_path_;
  std::string sql_;
  std::unique_ptr<sqlite3_stmt, StmtFinalizer> stmt_;
};

// Times are stored as ISO-8601 text: column `col` as Unix seconds, 0 for
// NULL or for a bad time in a row written by hand.
int64_t time_column(const Statement& st, int col);

// BEGIN IMMEDIATE on construction (a writer takes the lock up front, so the
// busy timeout applies there, not at a later upgrade); ROLLBACK on
// destruction unless commit() succeeded.
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& db_path);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  sqlite3* db_;
  const std::string& db_path_;
  bool done_ = false;
};

}  // namespace sendense::sqlite
