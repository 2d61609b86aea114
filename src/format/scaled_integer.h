// Integer formats whose values are not fixed point in the carrier -- a scale that is not a power
// of two or a zero point (int8:scale=0.1, uint8:scale=0.3:zp=7), the usual per-tensor quantizers
// of integer inference and training studies -- and their SIMD kernel
// (scaled_integer_simd.cpp), dispatched like the others (internal; the API is quantize_array.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "mpsim/format.h"
#include "mpsim/round.h"

namespace mpsim::detail {

struct ScaledIntPlan {
  Rounding rounding;
  double scale = 1, zp = 0, zmin = 0, zmax = 0;  // all exact in fp64
};

// The plan of an integer format that make_plan leaves to the scalar reference, where the
// kernel's error bounds hold (a scale between 2^-900 and 2^900, at most 32 bits, a zero point
// below 2^32 in magnitude); nullopt otherwise.
std::optional<ScaledIntPlan> make_scaled_int_plan(const Format& f, Carrier carrier);

// out[i] = quantize(in[i], f, first + i, key) for a format with such a plan.
void simd_quantize_scaled(const ScaledIntPlan& p, const Format& f, const float* in, float* out, std::size_t n,
                          std::uint64_t first, const RandomKey& key);
void simd_quantize_scaled(const ScaledIntPlan& p, const Format& f, const double* in, double* out, std::size_t n,
                          std::uint64_t first, const RandomKey& key);

}  // namespace mpsim::detail
