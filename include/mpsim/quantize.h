// The scalar reference quantizer: the specification of every element format and rounding mode.
// Fast kernels elsewhere are tested bit-identical to it. See docs/formats.md.
#pragma once

#include <cstdint>

#include "mpsim/format.h"
#include "mpsim/round.h"

namespace mpsim {

// What happened to one value (for error statistics and the CLI).
struct QuantFlags {
  bool inexact = false;    // the result differs from the input
  bool overflow = false;   // |input| beyond the largest finite value (became inf, NaN or max)
  bool saturated = false;  // the result was clamped to the largest (or smallest) value
  bool underflow = false;  // a nonzero input became zero or subnormal and was inexact
  bool nan_input = false;  // the input was NaN (it stays NaN in the carrier)
  bool nan_result = false; // the result is NaN (NaN input, or overflow into a NaN code)
};

struct QuantResult {
  double value = 0;
  QuantFlags flags;
};

// Rounds x (exactly, whatever its magnitude) into the format with its rounding mode.
// `index` and `key` select the random bits of stochastic rounding (ignored otherwise).
// Throws FormatError for the hysteresis mode, which needs the previous value (optimizer).
QuantResult quantize_ref(double x, const Format& f, std::uint64_t index = 0,
                         const RandomKey& key = {});

// The value only, in the fp64 carrier.
double quantize(double x, const Format& f, std::uint64_t index = 0, const RandomKey& key = {});

// The fp32 carrier: the format must fit it (Format::require_fits), else FormatError.
float quantize(float x, const Format& f, std::uint64_t index = 0, const RandomKey& key = {});

}  // namespace mpsim
