// Rounding an exact value of any width once into an element format (internal).
//
// The MAC reference computes every intermediate result exactly (ExactValue) and calls this
// wherever the MAC model prescribes a rounding. It follows src/format/quantize_ref.cpp step by
// step (same neighbours, same exact fraction, same decision, same flags, same random words) on
// a significand of any width, so on every double it returns exactly what quantize_ref returns;
// tests/test_mac_ref.cpp checks that for every kind of format and every rounding mode.
#pragma once

#include <cstdint>

#include "exact_value.h"
#include "mpsim/format.h"
#include "mpsim/quantize.h"
#include "mpsim/round.h"

namespace mpsim::detail {

// Rounds v into f with f's rounding mode; index and key select the random bits of sr/srN.
// The result is a value of the format (a double: every format's values fit fp64), NaN for NaN.
// Throws FormatError for `hyst`, as quantize_ref does.
QuantResult round_exact(const ExactValue& v, const Format& f, std::uint64_t index = 0, const RandomKey& key = {});

}  // namespace mpsim::detail
