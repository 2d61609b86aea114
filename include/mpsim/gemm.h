// The GEMM entry point of the MAC engine: C = bias + op(A) op(B) under a MAC spec, for the three
// GEMMs of training (include/mpsim/mac.h: GemmOp), bit-identical to the reference gemm_ref
// whatever the thread count. Threads split the outputs, never a reduction (DESIGN.md
// principle 3). docs/mac.md describes the semantics. The one exception is a spec that names
// the fast mode qfp32 (MacSpec::qfp32): operands rounded into a= and b=, then OpenBLAS sgemm,
// whose FP32 sums depend on its kernels and thread count, like plain FP32.
#pragma once

#include <cstddef>

#include "mpsim/mac.h"

namespace mpsim {

struct GemmOptions {
  BiasView bias;       // the accumulator's starting value per output (none: +0)
  MacRandom random;    // the key of stochastic roundings (seed, GEMM id)
  int threads = 0;     // 0: OpenMP's default
  // SIMD path: bytes of the packed block of operands that one task works on at a time (0: the
  // default, 1 MiB: cache-sized). A tuning knob only; results never depend on it.
  std::size_t block_bytes = 0;
};

// Row-major operands as in gemm_ref. Throws MacSpecError for an invalid spec and
// std::invalid_argument for bad shapes, before any work starts.
void gemm(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A, std::size_t lda,
          const double* B, std::size_t ldb, double* C, std::size_t ldc, const GemmOptions& options = {});

// fp32 operands and results. Inputs are exact in fp64; each result is the double result of the
// overload above converted to fp32 (exact when the accumulator, or out=, fits fp32; rounded to
// nearest otherwise, e.g. acc=exact or acc=fp64). The SIMD path quantizes and packs straight
// from the fp32 operands (no fp64 copies).
void gemm(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* A, std::size_t lda,
          const float* B, std::size_t ldb, float* C, std::size_t ldc, const GemmOptions& options = {});

// Whether gemm computes this spec with the SIMD kernels (order=seq or chunkN, exact products, an
// accumulator rounding to nearest-even whose sums the lanes hold exactly, or a float
// accumulator rounding stochastically with sr: docs/mac.md); every other spec runs through the
// exact reference, with the same results. For block-format inputs: whether the integer block
// kernels run (docs/mac.md section 7.3) rather than the reference block dot per output.
bool gemm_is_vectorized(const MacSpec& spec);  // false for qfp32 (OpenBLAS)

}  // namespace mpsim
