// The named fast mode "qfp32" (MacSpec::qfp32; docs/mac.md, "The named fast modes"): QPyTorch's
// semantics for baselines and speed. The operands are rounded into a= and b=, multiplied and
// accumulated by OpenBLAS sgemm in FP32 in its own order, and the results rounded into out=.
// It is not a MAC model, so it has no bit-accurate reference: the exact engine refuses it and
// gemm() sends it here only because the spec names it.
#pragma once

#include <cstddef>

#include "mpsim/gemm.h"
#include "mpsim/mac.h"

namespace mpsim::detail {

// Throws MacSpecError when `spec` is the qfp32 fast mode (for the bit-accurate reference).
void refuse_qfp32(const MacSpec& spec);

// C = bias + op(A) op(B) in the qfp32 mode; spec.qfp32 must be set and the shape checked. The
// bias is rounded to fp32 once and is the sgemm's starting C. OpenBLAS runs options.threads
// threads (0: OpenMP's default); the results depend on that count.
void gemm_qfp32(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* A,
                std::size_t lda, const float* B, std::size_t ldb, float* C, std::size_t ldc, const GemmOptions& options);
// fp64 operands and results: the operands are rounded into a= and b= in fp64 (whose values are
// then fp32 values, exactly), the fp32 mode runs, and its results are widened.
void gemm_qfp32(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A,
                std::size_t lda, const double* B, std::size_t ldb, double* C, std::size_t ldc, const GemmOptions& options);

}  // namespace mpsim::detail
