// Entry points of the SIMD kernels (quantize_simd.cpp), dispatched at run time to the best
// instruction set the CPU has, or the one forced through quantize_array.h (internal).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mpsim/format.h"
#include "mpsim/round.h"
#include "quantize_plan.h"

namespace mpsim::detail {

// out[i] = quantize(in[i], f, first + i, key) for a plan of kind floating or fixed.
void simd_quantize(const QuantPlan& p, const Format& f, const float* in, float* out, std::size_t n,
                   std::uint64_t first, const RandomKey& key);
void simd_quantize(const QuantPlan& p, const Format& f, const double* in, double* out, std::size_t n,
                   std::uint64_t first, const RandomKey& key);

// Blocks of seg consecutive fp32 elements (seg a multiple of simd_lanes_f32(); the last block
// may be shorter), in one pass: out[i] = quantize(in[i] * fwd[b], f, first + i, key) * inv[b],
// b = i / seg, where fwd[b] * in[i] must be exact (block_quantize.cpp checks that). Counts
// the elements whose scaled magnitude exceeds max_elem (clipped) and the nonzero inputs that
// became zero. `f` is the element format at scale 2^0 and p its plan.
struct BlockCounts {
  std::uint64_t clipped = 0, flushed = 0;
};
BlockCounts simd_quantize_blocks(const QuantPlan& p, const Format& f, const float* in, float* out, std::size_t n,
                                 std::size_t seg, const float* fwd, const float* inv, float max_elem, std::uint64_t first,
                                 const RandomKey& key);
// For consecutive blocks of seg fp32 elements (the last may be shorter): amax[k] = the largest
// magnitude bits, minnz[k] = the smallest (magnitude bits - 1) (zeros wrap to the largest).
void simd_block_scan(const float* x, std::size_t n, std::size_t seg, std::uint32_t* amax, std::uint32_t* minnz);
// fp32 lanes of the vectors dispatch picks now.
std::size_t simd_lanes_f32();

// out[i] = random_word(key, first + i, 0).
void simd_random_words(const RandomKey& key, std::uint64_t first, std::size_t n, std::uint32_t* out);

// The Highway target (HWY_AVX3, HWY_AVX2, HWY_SCALAR) that dispatch picks now.
std::int64_t simd_target();

}  // namespace mpsim::detail
