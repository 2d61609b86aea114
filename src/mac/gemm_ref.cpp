// The reference GEMM: every output is one reference dot product over p = 0 .. k-1, so the
// result cannot depend on how a fast kernel tiles or threads the work. With block-format
// inputs the operands are first quantized block by block as matrices.
#include <stdexcept>
#include <string>

#include <vector>

#include "gemm_shape.h"
#include "mpsim/mac.h"
#include "src/mac/block_dot.h"
#include "src/mac/gemm_qfp32.h"

namespace mpsim {

void gemm_ref(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A,
              std::size_t lda, const double* B, std::size_t ldb, double* C, std::size_t ldc, BiasView bias,
              const MacRandom& rnd) {
  spec.validate();
  detail::refuse_qfp32(spec);
  detail::check_gemm_shape(op, m, n, k, lda, ldb, ldc);
  const detail::GemmOperands<double> ops{op, A, lda, B, ldb};
  if (spec.block) {
    // Block inputs: op(A) (m x k) and op(B)^T (n x k) quantized as whole matrices, blocks
    // along k (tiles and NVFP4's tensor scale span the matrix), then one block dot per output.
    std::vector<double> a(m * k), b(n * k);
    detail::gather_reduction_rows(ops, m, n, k, a.data(), b.data());
    const std::vector<BlockScale> sa = detail::quantize_block_rows_ref(spec.block->a, m, k, a.data());
    const std::vector<BlockScale> sb = detail::quantize_block_rows_ref(spec.block->b, n, k, b.data());
    const std::size_t nkb = (k + spec.block->extent() - 1) / spec.block->extent();
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        C[i * ldc + j] = detail::block_dot_quantized(spec, k, {a.data() + i * k, 1, sa.data() + i * nkb},
                                                     {b.data() + j * k, 1, sb.data() + j * nkb}, bias.at(i, j), rnd, i * n + j)
                             .value;
      }
    }
    return;
  }
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      C[i * ldc + j] = dot_ref(spec, k, ops.a_row(i), ops.a_step(), ops.b_col(j), ops.b_step(), bias.at(i, j), rnd, i * n + j).value;
    }
  }
}

namespace detail {

void check_gemm_shape(GemmOp op, std::size_t m, std::size_t n, std::size_t k, std::size_t lda, std::size_t ldb,
                      std::size_t ldc) {
  const std::size_t a_cols = op == GemmOp::tn ? m : k;
  const std::size_t b_cols = op == GemmOp::nt ? k : n;
  if (lda < a_cols) throw std::invalid_argument("gemm: lda " + std::to_string(lda) + " is smaller than A's " + std::to_string(a_cols) + " columns");
  if (ldb < b_cols) throw std::invalid_argument("gemm: ldb " + std::to_string(ldb) + " is smaller than B's " + std::to_string(b_cols) + " columns");
  if (ldc < n) throw std::invalid_argument("gemm: ldc " + std::to_string(ldc) + " is smaller than C's " + std::to_string(n) + " columns");
  if (m != 0 && n > (std::uint64_t{1} << 32) / m) throw std::invalid_argument("gemm: m * n exceeds 2^32 outputs");
  if (k >= (std::uint64_t{1} << 28)) throw std::invalid_argument("gemm: k must be below 2^28");
}

}  // namespace detail

}  // namespace mpsim
