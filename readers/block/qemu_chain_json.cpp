#include "readers/block/qemu_chain_json.h"

namespace sendense {

namespace {

// The drivers whose images may name a backing file: the only ones that
// accept (and need) "backing".
bool takes_backing(ImageFormat f) { return f == ImageFormat::qcow2 || f == ImageFormat::vmdk; }

std::string link_json(const std::vector<ChainLink>& chain, size_t i, const QemuChainOptions& options) {
  const ChainLink& link = chain[i];
  const std::string read_only = options.read_only ? ",\"read-only\":true" : "";
  std::string j = "{\"driver\":" + json_string(to_string(link.format));
  if (i == 0 && !options.top_node_name.empty()) j += ",\"node-name\":" + json_string(options.top_node_name);
  j += read_only + ",\"file\":{\"driver\":\"file\"" + read_only + ",\"filename\":" + json_string(link.path) + "}";
  if (takes_backing(link.format))
    j += ",\"backing\":" + (i + 1 < chain.size() ? link_json(chain, i + 1, options) : std::string("null"));
  return j + "}";
}

}  // namespace

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      static const char* hex = "0123456789abcdef";
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string qemu_chain_json(const std::vector<ChainLink>& chain, const QemuChainOptions& options) {
  return chain.empty() ? std::string("null") : link_json(chain, 0, options);
}

}  // namespace sendense
