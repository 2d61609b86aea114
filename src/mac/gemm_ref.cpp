// The reference GEMM: every output is one reference dot product over p = 0 .. k-1, so the
// result cannot depend on how a fast kernel tiles or threads the work.
#include <stdexcept>
#include <string>

#include "mpsim/mac.h"

namespace mpsim {

void gemm_ref(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A,
              std::size_t lda, const double* B, std::size_t ldb, double* C, std::size_t ldc, BiasView bias,
              const MacRandom& rnd) {
  spec.validate();
  // Shapes first, before any work (the random-bit layout needs m n <= 2^32 and k < 2^28).
  const std::size_t a_cols = op == GemmOp::tn ? m : k;
  const std::size_t b_cols = op == GemmOp::nt ? k : n;
  if (lda < a_cols) throw std::invalid_argument("gemm: lda " + std::to_string(lda) + " is smaller than A's " + std::to_string(a_cols) + " columns");
  if (ldb < b_cols) throw std::invalid_argument("gemm: ldb " + std::to_string(ldb) + " is smaller than B's " + std::to_string(b_cols) + " columns");
  if (ldc < n) throw std::invalid_argument("gemm: ldc " + std::to_string(ldc) + " is smaller than C's " + std::to_string(n) + " columns");
  if (m != 0 && n > (std::uint64_t{1} << 32) / m) throw std::invalid_argument("gemm: m * n exceeds 2^32 outputs");
  if (k >= (std::uint64_t{1} << 28)) throw std::invalid_argument("gemm: k must be below 2^28");
  const auto sd = [](std::size_t v) { return static_cast<std::ptrdiff_t>(v); };
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      // Row i of op(A) and column j of op(B), as (pointer, stride) along p.
      const double* pa = op == GemmOp::tn ? A + i : A + i * lda;
      const std::ptrdiff_t ia = op == GemmOp::tn ? sd(lda) : 1;
      const double* pb = op == GemmOp::nt ? B + j * ldb : B + j;
      const std::ptrdiff_t ib = op == GemmOp::nt ? 1 : sd(ldb);
      const double b0 = bias.data ? bias.data[sd(i) * bias.row_stride + sd(j) * bias.col_stride] : 0.0;
      C[i * ldc + j] = dot_ref(spec, k, pa, ia, pb, ib, b0, rnd, i * n + j).value;
    }
  }
}

}  // namespace mpsim
