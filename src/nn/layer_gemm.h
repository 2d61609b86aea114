// The one place where a layer's GEMM chooses its arithmetic: plain FP32 through OpenBLAS when
// the layer's precision has no MAC spec for it, the bit-accurate MAC engine otherwise. Layers
// never call either directly, so the two modes share all the code around the GEMM.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

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

// Plain FP32 C (m x n) = beta C + op(A) op(B) through cblas_sgemm on the calling thread only,
// for the plain-FP32 paths that run many small independent GEMMs inside their own parallel loop
// (one range of samples per thread); the loop holds a SerialBlas meanwhile. Never for an
// emulated precision: layers call it only when the GEMM's spec is nullopt.
void fp32_gemm_serial(GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* A, std::size_t lda,
                      const float* B, std::size_t ldb, float beta, float* C, std::size_t ldc);

// Makes OpenBLAS run each GEMM on its calling thread while alive, for a parallel loop of `team`
// threads that calls fp32_gemm_serial. OpenBLAS's OpenMP build does so by itself inside an
// active parallel region, but a team of one thread is none, and other builds never do: there
// OpenBLAS is set to one thread, and the destructor restores its thread count and OpenMP's
// default team size (OpenBLAS's setter changes both). Inside an enclosing active parallel
// region nothing is changed: the setting is shared with the other threads.
class SerialBlas {
 public:
  explicit SerialBlas(int team);
  ~SerialBlas();
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;

 private:
  int blas_threads_ = 0, omp_threads_ = 0;
  bool changed_ = false;
};

// Checks that the constant 1 passes unchanged into both input formats of `spec`, as the bias
// gradient (a GEMM with a vector of ones) requires; throws MacSpecError naming the layer
// otherwise. nullopt (FP32) always passes.
void check_ones_operand(const std::optional<MacSpec>& spec, const std::string& layer);

// The bias gradient db[i] = sum over j of D[i, j] for i < rows, j < len, as the GEMM D * 1 with
// a vector of ones, under the GRAD precision `spec` (check_ones_operand first), so it reduces in
// the GRAD order and D stays operand a. D is stored rows x len with row stride ldd, or, when
// `transposed`, len x rows (the batch-major dy of Linear: op tn).
void bias_gradient(const std::optional<MacSpec>& spec, bool transposed, std::size_t rows, std::size_t len, const float* D,
                   std::size_t ldd, float* db, const MacRandom& rnd, int threads);

}  // namespace mpsim::detail
