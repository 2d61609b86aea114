// Quantizing arrays: the fast path. Explicit SIMD (AVX-512, AVX2 or one lane, picked at run
// time), OpenMP across large arrays, and counter-based random bits, so the result is the same
// bits as the scalar reference (quantize.h) element by element, whatever the vector width,
// thread count or chunking of the calls. See docs/formats.md, "Performance".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "mpsim/format.h"
#include "mpsim/round.h"

namespace mpsim {

struct QuantizeOptions {
  // Where the random bits of stochastic rounding come from: element i of the array (i from 0)
  // is element first_index + i of stream key.stream under key.seed. Two calls that cover
  // [0, a) and [a, n) with first_index 0 and a give the bits of one call over [0, n).
  RandomKey key{};
  std::uint64_t first_index = 0;
  // 0: as many threads as OpenMP gives; 1: this thread only. Results do not depend on it.
  int threads = 0;
};

// out[i] = quantize(in[i], f, first_index + i, key), bit for bit. `out` may equal `in`.
// fp32: the format must fit the fp32 carrier (Format::require_fits) unless it is an integer
// format (whose values are rounded once to fp32, as the scalar quantize does).
// Throws FormatError for the hysteresis mode (it needs the previous values: optimizer).
void quantize_array(const float* in, float* out, std::size_t n, const Format& f,
                    const QuantizeOptions& options = {});
void quantize_array(const double* in, double* out, std::size_t n, const Format& f,
                    const QuantizeOptions& options = {});

// Random word 0 of elements first_index .. first_index + n - 1 (random_word(key, i, 0)), made
// with the same SIMD Philox the stochastic kernels use.
void random_words(const RandomKey& key, std::uint64_t first_index, std::size_t n, std::uint32_t* out);

// The instruction sets the kernels are built for. `scalar` runs the same kernel one lane at a
// time (and is the only level on machines without AVX2).
enum class SimdLevel { scalar, avx2, avx512 };

std::string to_string(SimdLevel level);
// The levels this CPU can run, lowest first (scalar is always there).
std::vector<SimdLevel> available_simd_levels();
// The level the kernels run at now: the best available unless forced.
SimdLevel active_simd_level();
// Runs every later call at `level` (for tests and benchmarks); throws FormatError if the CPU
// cannot run it. Process-wide: not to be called while another thread quantizes.
void force_simd_level(SimdLevel level);
// Back to the best available level.
void reset_simd_level();

// Whether quantize_array runs `f` through the SIMD kernels (true for floats of radix 2,
// fixed point, and integers with a power-of-two scale and no zero point) or element by element
// through the scalar reference (the other integer formats and radix-4 floats), for `carrier`.
bool quantize_array_is_vectorized(const Format& f, Carrier carrier);

}  // namespace mpsim
