#include "src/mac/gemm_qfp32.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/quantize.h"
#include "mpsim/quantize_array.h"

namespace mpsim::detail {

namespace {

// The stored extent of an operand: rows x cols as laid out in memory (op decides how it is read).
struct Stored {
  std::size_t rows, cols;
};

// out (rows x cols, dense) = the stored operand rounded into f, or with a block format block by
// block along the reduction, which is axis k_axis of the stored matrix (0: its rows, 1: its
// columns). Deterministic rounding modes only (MacSpec::validate refuses stochastic inputs), so
// the element indices do not matter.
template <typename T>
void quantize_operand(const T* in, std::size_t ld, Stored s, const Format& f, const BlockFormat* block, int k_axis, T* out,
                      int threads) {
  if (block) {
    for (std::size_t r = 0; r < s.rows; ++r) std::copy(in + r * ld, in + r * ld + s.cols, out + r * s.cols);
    BlockQuantizeOptions bo;
    bo.threads = threads;
    quantize_blocks(*block, out, out, BlockLayout{{s.rows, s.cols}, k_axis}, bo);
    return;
  }
  QuantizeOptions qo;
  qo.threads = threads;
  if (ld == s.cols) {
    quantize_array(in, out, s.rows * s.cols, f, qo);
    return;
  }
  for (std::size_t r = 0; r < s.rows; ++r) quantize_array(in + r * ld, out + r * s.cols, s.cols, f, qo);
}

int as_int(std::size_t v, const char* what) {
  if (v > static_cast<std::size_t>(INT_MAX)) {
    throw std::invalid_argument(std::string("qfp32 GEMM: ") + what + " " + std::to_string(v) +
                                " exceeds OpenBLAS's int range");
  }
  return static_cast<int>(v);
}

Stored stored_a(GemmOp op, std::size_t m, std::size_t k) { return op == GemmOp::tn ? Stored{k, m} : Stored{m, k}; }
Stored stored_b(GemmOp op, std::size_t n, std::size_t k) { return op == GemmOp::nt ? Stored{n, k} : Stored{k, n}; }
// The stored axis that runs along the reduction.
int k_axis_a(GemmOp op) { return op == GemmOp::tn ? 0 : 1; }
int k_axis_b(GemmOp op) { return op == GemmOp::nt ? 1 : 0; }
const BlockFormat* block_a(const MacSpec& s) { return s.block ? &s.block->a : nullptr; }
const BlockFormat* block_b(const MacSpec& s) { return s.block ? &s.block->b : nullptr; }

// C = bias + op(qa) op(qb) by sgemm on operands already rounded into a= and b= (dense, stored
// as op reads them), then out=. The bias is rounded to fp32 once (an fp32 accumulator's
// starting content), else +0.
void multiply_rounded(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* qa,
                      const float* qb, float* C, std::size_t ldc, const GemmOptions& o, int team) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) C[i * ldc + j] = static_cast<float>(o.bias.at(i, j));
  if (k > 0) {
    // OpenBLAS's thread count is a library-wide setting: set only when it differs, and never
    // from inside a parallel region, where other threads share it.
    if (!omp_in_parallel() && openblas_get_num_threads() != team) openblas_set_num_threads(team);
    cblas_sgemm(CblasRowMajor, op == GemmOp::tn ? CblasTrans : CblasNoTrans, op == GemmOp::nt ? CblasTrans : CblasNoTrans,
                as_int(m, "m"), as_int(n, "n"), as_int(k, "k"), 1.0f, qa, as_int(stored_a(op, m, k).cols, "a row length"),
                qb, as_int(stored_b(op, n, k).cols, "b row length"), 1.0f, C, as_int(ldc, "ldc"));
  }
  if (!spec.out) return;
  // out=: each result rounded once; stochastic modes draw the bits of the MAC's out= site.
  const Format& f = *spec.out;
  if (f.rounding().stochastic()) {
    const RandomKey key = mac_random_key(o.random);
    const auto rows = static_cast<std::int64_t>(m);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1 && m * n > 4096)
    for (std::int64_t si = 0; si < rows; ++si) {
      const auto i = static_cast<std::size_t>(si);
      for (std::size_t j = 0; j < n; ++j) {
        float& c = C[i * ldc + j];
        c = quantize(c, f, mac_random_index(i * n + j, 0, MacSite::out), key);
      }
    }
    return;
  }
  QuantizeOptions qo;
  qo.threads = team;
  if (ldc == n) {
    quantize_array(C, C, m * n, f, qo);
  } else {
    for (std::size_t i = 0; i < m; ++i) quantize_array(C + i * ldc, C + i * ldc, n, f, qo);
  }
}

}  // namespace

void refuse_qfp32(const MacSpec& spec) {
  if (spec.qfp32) {
    throw MacSpecError("MAC item 'qfp32': the fast mode accumulates in FP32 through OpenBLAS in OpenBLAS's order; it "
                       "has no bit-accurate reference (gemm_ref, dot_ref): call gemm()");
  }
}

void gemm_qfp32(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* A,
                std::size_t lda, const float* B, std::size_t ldb, float* C, std::size_t ldc, const GemmOptions& o) {
  if (m == 0 || n == 0) return;
  const int team = o.threads > 0 ? o.threads : omp_get_max_threads();
  const Stored sa = stored_a(op, m, k), sb = stored_b(op, n, k);
  // The rounded operands, in buffers of the calling thread kept between calls (zero-filled
  // only when they grow): a large operand is not allocated and faulted in again every call.
  thread_local std::vector<float> qa, qb;
  if (qa.size() < sa.rows * sa.cols) qa.resize(sa.rows * sa.cols);
  if (qb.size() < sb.rows * sb.cols) qb.resize(sb.rows * sb.cols);
  quantize_operand(A, lda, sa, spec.a, block_a(spec), k_axis_a(op), qa.data(), team);
  quantize_operand(B, ldb, sb, spec.b, block_b(spec), k_axis_b(op), qb.data(), team);
  multiply_rounded(spec, op, m, n, k, qa.data(), qb.data(), C, ldc, o, team);
}

void gemm_qfp32(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A,
                std::size_t lda, const double* B, std::size_t ldb, double* C, std::size_t ldc, const GemmOptions& o) {
  if (m == 0 || n == 0) return;
  const int team = o.threads > 0 ? o.threads : omp_get_max_threads();
  const Stored sa = stored_a(op, m, k), sb = stored_b(op, n, k);
  std::vector<double> qa(sa.rows * sa.cols), qb(sb.rows * sb.cols);
  quantize_operand(A, lda, sa, spec.a, block_a(spec), k_axis_a(op), qa.data(), team);
  quantize_operand(B, ldb, sb, spec.b, block_b(spec), k_axis_b(op), qb.data(), team);
  // Values of a= and b= fit fp32 (MacSpec::validate), so these conversions are exact (NVFP4's
  // elements times their 28-bit scales excepted: those are rounded to fp32 here).
  const std::vector<float> fa(qa.begin(), qa.end()), fb(qb.begin(), qb.end());
  std::vector<float> c(m * n);
  multiply_rounded(spec, op, m, n, k, fa.data(), fb.data(), c.data(), n, o, team);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) C[i * ldc + j] = c[i * n + j];
}

}  // namespace mpsim::detail
