// Structured logging to stderr (journald picks it up under systemd):
//   2026-11-24T04:30:00.123Z info attach backup=backup-a volumes=2 ms=14
// One line per event, key=value pairs, values quoted when they hold spaces.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace sendense::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

void set_level(Level level);
Level level();
bool enabled(Level level);

using Field = std::pair<std::string_view, std::string>;

// Writes "<time> <level> <event> k=v ..." atomically (one write(2) per line).
void write(Level level, std::string_view event, std::initializer_list<Field> fields = {});

inline void debug(std::string_view event, std::initializer_list<Field> f = {}) {
  if (enabled(Level::debug)) write(Level::debug, event, f);
}
inline void info(std::string_view event, std::initializer_list<Field> f = {}) { write(Level::info, event, f); }
inline void warn(std::string_view event, std::initializer_list<Field> f = {}) { write(Level::warn, event, f); }
inline void error(std::string_view event, std::initializer_list<Field> f = {}) { write(Level::error, event, f); }

}  // namespace sendense::log
