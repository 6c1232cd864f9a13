// Small text helpers shared by the commands' human-readable output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sendense::cli {

// 1536 -> "1.5K", 10737418240 -> "10G" (powers of 1024).
std::string human_size(uint64_t bytes);

// 3725 -> "1h02m", 42 -> "42s", 90061 -> "1d01h".
std::string human_duration(int64_t seconds);

// Prints rows as left-aligned columns separated by two spaces; the first
// row is the header.
std::string table(const std::vector<std::vector<std::string>>& rows);

}  // namespace sendense::cli
