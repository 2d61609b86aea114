// The one place where a layer's GEMM chooses its arithmetic: plain FP32 through OpenBLAS when
// the layer's precision has no MAC spec for it, the bit-accurate MAC engine otherwise. Layers
// never call either directly, so the two modes share all the code around the GEMM.
#pragma once

#include <cstddef>
#include <optional>

#include "mpsim/mac.h"

namespace mpsim::detail {

// Where a GEMM's starting values come from: none (+0), one per row or one per column of C.
enum class BiasAxis { none, row, col };

// C (m x n, row stride ldc) = bias + op(A) op(B) with the operand layouts of gemm_ref
// (include/mpsim/mac.h). spec == nullopt: cblas_sgemm (C filled with the bias, beta = 1).
// Otherwise mpsim::gemm under *spec with `rnd` as the stochastic-rounding key; the result does
// not depend on `threads` (0: OpenMP's default).
void layer_gemm(const std::optional<MacSpec>& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k,
                const float* A, std::size_t lda, const float* B, std::size_t ldb, float* C, std::size_t ldc,
                const float* bias, BiasAxis axis, const MacRandom& rnd, int threads);

// Checks that the constant 1 passes unchanged into both input formats of `spec`, as the bias
// gradient (a GEMM with a vector of ones) requires; throws MacSpecError naming the layer
// otherwise. nullopt (FP32) always passes.
void check_ones_operand(const std::optional<MacSpec>& spec, const std::string& layer);

}  // namespace mpsim::detail
