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

}  // namespace mpsim::detail
