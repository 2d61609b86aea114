// Small text helpers shared by the format and rounding parsers (internal).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mpsim::detail {

std::string lowercase(std::string_view s);
bool is_digits(std::string_view s);
// An unsigned decimal integer (digits only, no sign or spaces) within [lo, hi].
std::optional<int> parse_uint_in(std::string_view s, int lo, int hi);
// A signed decimal integer (optional leading '-' or '+').
std::optional<long long> parse_int(std::string_view s);
// A finite or non-finite decimal/hex-float number, the whole string (strtod grammar).
std::optional<double> parse_double(std::string_view s);
// Shortest decimal string that reads back to the same double.
std::string shortest(double v);

// s cut at every sep (empty pieces kept).
std::vector<std::string> split(const std::string& s, char sep);

// Format strings have no whitespace, control characters, or any of , ; | # (so that they can
// be listed in configs and MAC specs): the first offending character, described for a message
// ("character 'x' is not allowed in a format string"), or nothing.
std::optional<std::string> disallowed_character(std::string_view s);

// Whether a format string is spelled as a block format (docs/formats.md 1.2): it contains '/',
// or starts with hbfp, mx or nvfp4 (case-insensitive).
bool spelled_as_block_format(std::string_view s);

}  // namespace mpsim::detail
