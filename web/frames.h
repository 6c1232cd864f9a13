// The broker's wire format over its socketpair (SOCK_STREAM): each message is
// a 4-byte length (host order, both ends are the same binary) followed by that
// many bytes of JSON text. One request, one answer, in turn.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

namespace sendense::web {

inline constexpr uint32_t kMaxFrame = 16u << 20;

// Writes one frame; throws Error (errno) when the peer is gone.
void write_frame(int fd, const nlohmann::json& message);

// Reads one frame; nullopt at a clean EOF before the first byte. Throws Error
// on a short read, an oversized frame or JSON that does not parse.
std::optional<nlohmann::json> read_frame(int fd);

}  // namespace sendense::web
