// The GEMM entry point. Every output is the reference dot product of its row and column
// (dot_ref), so the result is gemm_ref's bit for bit; OpenMP shares whole rows of outputs
// between threads (a reduction is never split, and the random bits of each rounding depend
// only on its output index and step), so the thread count changes nothing.
//
// This is the exact path for every MAC spec. SIMD kernels for the common specs (docs/mac.md,
// "Not yet implemented") will take over behind this same entry point, tested bit-identical.
#include "mpsim/gemm.h"

#include <omp.h>

#include <vector>

#include "gemm_shape.h"

namespace mpsim {

void gemm(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A, std::size_t lda,
          const double* B, std::size_t ldb, double* C, std::size_t ldc, const GemmOptions& o) {
  spec.validate();
  detail::check_gemm_shape(op, m, n, k, lda, ldb, ldc);
  const detail::GemmOperands<double> ops{op, A, lda, B, ldb};
  const BiasView bias = o.bias;
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const auto rows = static_cast<std::int64_t>(m);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && m > 1)
  for (std::int64_t si = 0; si < rows; ++si) {
    const auto i = static_cast<std::size_t>(si);
    for (std::size_t j = 0; j < n; ++j) {
      const double b0 = bias.data ? bias.data[si * bias.row_stride + static_cast<std::ptrdiff_t>(j) * bias.col_stride] : 0.0;
      C[i * ldc + j] = dot_ref(spec, k, ops.a_row(i), ops.a_step(), ops.b_col(j), ops.b_step(), b0, o.random, i * n + j).value;
    }
  }
}

void gemm(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* A, std::size_t lda,
          const float* B, std::size_t ldb, float* C, std::size_t ldc, const GemmOptions& o) {
  spec.validate();
  detail::check_gemm_shape(op, m, n, k, lda, ldb, ldc);
  // A and B as stored (op decides how they are read), widened exactly to fp64 and packed
  // (only the columns a row uses are read: the last row may end right after them).
  const std::size_t a_rows = op == GemmOp::tn ? k : m, a_cols = op == GemmOp::tn ? m : k;
  const std::size_t b_rows = op == GemmOp::nt ? n : k, b_cols = op == GemmOp::nt ? k : n;
  std::vector<double> a(a_rows * a_cols), b(b_rows * b_cols), c(m * n);
  for (std::size_t r = 0; r < a_rows; ++r)
    for (std::size_t q = 0; q < a_cols; ++q) a[r * a_cols + q] = A[r * lda + q];
  for (std::size_t r = 0; r < b_rows; ++r)
    for (std::size_t q = 0; q < b_cols; ++q) b[r * b_cols + q] = B[r * ldb + q];
  gemm(spec, op, m, n, k, a.data(), a_cols, b.data(), b_cols, c.data(), n, o);
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) C[i * ldc + j] = static_cast<float>(c[i * n + j]);
  }
}

}  // namespace mpsim
