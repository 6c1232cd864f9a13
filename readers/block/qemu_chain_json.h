// The one way we hand a validated image chain to qemu (qemu-nbd,
// qemu-storage-daemon): a JSON node naming the driver and file of every
// link, with "backing": null at the base, so qemu resolves no backing name
// and probes no format itself.
#pragma once

#include <string>
#include <vector>

#include "readers/block/block_device.h"

namespace sendense {

// `s` as a JSON string literal (quotes, backslashes, control bytes escaped).
std::string json_string(const std::string& s);

struct QemuChainOptions {
  bool read_only = false;      // "read-only": true on every node and file
  std::string top_node_name;   // "node-name" of the top node ("" for none)
};

// The chain (top first, as read_image_chain gives it) as one qemu block node.
std::string qemu_chain_json(const std::vector<ChainLink>& chain, const QemuChainOptions& options = {});

}  // namespace sendense
