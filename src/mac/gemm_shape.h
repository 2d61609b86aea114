// Shape checks shared by the reference GEMM and the GEMM entry point (internal): all of them
// run before any work, so a bad call changes nothing.
#pragma once

#include <cstddef>

#include "mpsim/mac.h"

namespace mpsim::detail {

// Throws std::invalid_argument naming the problem: a leading dimension smaller than its
// matrix's row, or a shape beyond the random-bit layout (m n <= 2^32 outputs, k < 2^28).
void check_gemm_shape(GemmOp op, std::size_t m, std::size_t n, std::size_t k, std::size_t lda, std::size_t ldb,
                      std::size_t ldc);

// Row i of op(A) and column j of op(B) as (pointer, stride) along the reduction.
template <typename T>
struct GemmOperands {
  GemmOp op;
  const T* A;
  std::size_t lda;
  const T* B;
  std::size_t ldb;
  const T* a_row(std::size_t i) const { return op == GemmOp::tn ? A + i : A + i * lda; }
  std::ptrdiff_t a_step() const { return op == GemmOp::tn ? static_cast<std::ptrdiff_t>(lda) : 1; }
  const T* b_col(std::size_t j) const { return op == GemmOp::nt ? B + j * ldb : B + j; }
  std::ptrdiff_t b_step() const { return op == GemmOp::nt ? 1 : static_cast<std::ptrdiff_t>(ldb); }
};

// op(A) as an m x k and op(B)^T as an n x k row-major matrix (each row one operand vector along
// the reduction), converted to Q: the layout in which block formats are quantized.
template <typename Q, typename T>
void gather_reduction_rows(const GemmOperands<T>& ops, std::size_t m, std::size_t n, std::size_t k, Q* a, Q* b) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t p = 0; p < k; ++p) a[i * k + p] = ops.a_row(i)[static_cast<std::ptrdiff_t>(p) * ops.a_step()];
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t p = 0; p < k; ++p) b[j * k + p] = ops.b_col(j)[static_cast<std::ptrdiff_t>(p) * ops.b_step()];
}

}  // namespace mpsim::detail
