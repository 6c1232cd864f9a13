// The page's files (web/static/), embedded at build time by
// web/embed_static.cmake: only the files present when the build was made.
#pragma once

#include <cstddef>
#include <string_view>

namespace sendense::web {

struct StaticAsset {
  std::string_view name;          // "index.html", "app.js", "style.css"
  std::string_view content_type;
  std::string_view body;
};

// nullptr when the build has no such file.
const StaticAsset* find_static_asset(std::string_view name);

}  // namespace sendense::web
