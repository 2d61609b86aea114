// Small text helpers shared by the format and rounding parsers (internal).
#pragma once

#include <optional>
#include <string>
#include <string_view>

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

}  // namespace mpsim::detail
