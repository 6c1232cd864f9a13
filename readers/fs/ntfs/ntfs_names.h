// NTFS names (UTF-16LE code units, as stored) to the UTF-8 names shown.
// Pure functions, no library: unit-tested on their own.
//
// Escaping rule (documented in README): every valid UTF-16 sequence becomes
// its UTF-8 form, case preserved. A code unit that is not part of a valid
// pair (an unpaired surrogate, which Windows allows in names) becomes U+FFFD
// followed by its value as 4 lowercase hex digits ("\xef\xbf\xbd" "d800"),
// so the name stays valid UTF-8, is shown the same way every time and can be
// looked up exactly as listed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sendense::ntfs {

// `units` points at `count` little-endian UTF-16 code units (possibly
// unaligned, as in an MFT record).
std::string utf16le_to_utf8(const void* units, size_t count);

}  // namespace sendense::ntfs
