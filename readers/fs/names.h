// Names from a backup are data a guest wrote. A name the kernel cannot take
// as a directory entry (empty, holding '/' or NUL, or a stray "." / "..")
// would make it reject a whole readdir batch, so such a name is shown
// escaped, the same way every time: '/' becomes U+2215 (∕), NUL becomes
// U+2400 (␀), and an empty or dot name gets U+FFFD appended. Every valid name
// is shown unchanged; lookups of an escaped name find the raw entry again.
// Invalid UTF-8 is shown as it is (Linux paths are bytes).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sendense {

// True if `name` can be a directory entry as it is.
bool valid_entry_name(std::string_view name);

// The name to show for a raw on-disk name that is not valid.
std::string escape_entry_name(std::string_view raw);

// True if `shown` may be an escaped name (holds one of the escape characters).
bool may_be_escaped(std::string_view shown);

// The names to show for one directory's raw entries, in order: valid names
// (and the first "." and "..") as they are; the others escaped, and if that
// collides with another shown name or exceeds 255 bytes, tagged with U+FFFD
// and the entry's position in the directory. Every raw entry stays reachable
// under a unique name of at most 255 bytes. Listing and lookup both use this.
std::vector<std::string> shown_names(const std::vector<std::string>& raw);

}  // namespace sendense
