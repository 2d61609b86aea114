// Integer formats with a scale and a zero point (internal): the exact code computation and the
// carrier values of a code, shared by the reference quantizer and the codec.
#pragma once

#include <cstdint>

#include "mpsim/format.h"
#include "mpsim/quantize.h"

namespace mpsim::detail {

// z = round(x / scale + zp) computed exactly with the format's rounding, clamped to the range.
long long integer_code(double x, const IntSpec& s, const Rounding& rnd, std::uint64_t index,
                       const RandomKey& key, QuantFlags& flags);
// The value of code z: (z - zp) * scale rounded once to the carrier.
double integer_value(const IntSpec& s, long long z);
float integer_value32(const IntSpec& s, long long z);

}  // namespace mpsim::detail
