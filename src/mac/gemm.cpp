// The GEMM entry point. Every output is the reference dot product of its row and column
// (dot_ref), so the result is gemm_ref's bit for bit; OpenMP shares whole rows of outputs
// between threads (a reduction is never split, and the random bits of each rounding depend
// only on its output index and step), so the thread count changes nothing.
//
// Specs that gemm_fast.h admits run through the SIMD kernels instead, tested bit-identical to
// the reference; everything else through the reference itself.
#include "mpsim/gemm.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "gemm_shape.h"
#include "mpsim/quantize.h"
#include "mpsim/quantize_array.h"
#include "src/mac/gemm_fast.h"

namespace mpsim {

namespace {

// The SIMD path (gemm_fast.h): operands quantized to a= / b= (as the reference does) and packed
// in the lane type L, the bias rounded into the accumulator, rows of outputs shared between
// threads, out= applied per output with its own random key.
template <typename L>
void gemm_simd(const MacSpec& spec, const detail::GemmFastPlan& plan, GemmOp op, std::size_t m, std::size_t n,
               std::size_t k, const double* A, std::size_t lda, const double* B, std::size_t ldb, double* C, std::size_t ldc,
               const GemmOptions& o) {
  const detail::GemmOperands<double> ops{op, A, lda, B, ldb};
  const Format& acc = *spec.acc;
  const std::size_t width = std::is_same_v<L, float> ? detail::gemm_fast_width_f32() : detail::gemm_fast_width_f64();
  const std::size_t panels = (n + width - 1) / width;
  QuantizeOptions qo;
  qo.threads = o.threads;
  // op(A) as m x k and op(B) as k x n, in fp64, then quantized in place (deterministic modes).
  // (Packing is plain copying, shared between the threads by rows.)
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  std::vector<double> a(m * k), b(k * n);
  const auto sm = static_cast<std::int64_t>(m), sk = static_cast<std::int64_t>(k);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t si = 0; si < sm; ++si) {
    const auto i = static_cast<std::size_t>(si);
    for (std::size_t p = 0; p < k; ++p) a[i * k + p] = ops.a_row(i)[static_cast<std::ptrdiff_t>(p) * ops.a_step()];
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t sp = 0; sp < sk; ++sp) {
    const auto p = static_cast<std::size_t>(sp);
    for (std::size_t j = 0; j < n; ++j) b[p * n + j] = ops.b_col(j)[static_cast<std::ptrdiff_t>(p) * ops.b_step()];
  }
  quantize_array(a.data(), a.data(), a.size(), spec.a, qo);
  quantize_array(b.data(), b.data(), b.size(), spec.b, qo);
  // Exact conversions: the plan admits only formats whose values the lane type holds.
  std::vector<L> Ap(a.begin(), a.end()), Bp(panels * k * width, L(0)), Cp(m * n);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t sp = 0; sp < sk; ++sp) {
    const auto p = static_cast<std::size_t>(sp);
    for (std::size_t j = 0; j < n; ++j) Bp[((j / width) * k + p) * width + j % width] = static_cast<L>(b[p * n + j]);
  }
  // The bias, rounded into the accumulator (to nearest-even: its random key plays no part).
  std::vector<double> c0(m * n, 0.0);
  if (o.bias.data) {
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) c0[i * n + j] = o.bias.at(i, j);
  }
  quantize_array(c0.data(), c0.data(), c0.size(), acc, qo);
  for (std::size_t i = 0; i < m * n; ++i) Cp[i] = static_cast<L>(c0[i]);
  // Tasks are column panels (all rows each), so a panel of B is read from memory once; a task
  // owns its outputs, and every output's reduction stays whole.
  const auto tasks = static_cast<std::int64_t>(panels);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && tasks > 1)
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto q = static_cast<std::size_t>(t);
    if constexpr (std::is_same_v<L, float>) {
      detail::gemm_fast_f32(plan, acc, Ap.data(), Bp.data(), width, m, n, k, 0, m, q, q + 1, Cp.data());
    } else {
      detail::gemm_fast_f64(plan, acc, Ap.data(), Bp.data(), width, m, n, k, 0, m, q, q + 1, Cp.data());
    }
  }
  const RandomKey key = mac_random_key(o.random);
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      const double v = static_cast<double>(Cp[i * n + j]);
      C[i * ldc + j] = spec.out ? quantize(v, *spec.out, mac_random_index(i * n + j, 0, MacSite::out), key) : v;
    }
  }
}

}  // namespace

bool gemm_is_vectorized(const MacSpec& spec) { return detail::plan_gemm_fast(spec).ok; }

void gemm(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const double* A, std::size_t lda,
          const double* B, std::size_t ldb, double* C, std::size_t ldc, const GemmOptions& o) {
  spec.validate();
  detail::check_gemm_shape(op, m, n, k, lda, ldb, ldc);
  if (const detail::GemmFastPlan plan = detail::plan_gemm_fast(spec); plan.ok && m * n * k != 0) {
    if (plan.f32) gemm_simd<float>(spec, plan, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    else gemm_simd<double>(spec, plan, op, m, n, k, A, lda, B, ldb, C, ldc, o);
    return;
  }
  const detail::GemmOperands<double> ops{op, A, lda, B, ldb};
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const auto rows = static_cast<std::int64_t>(m);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && m > 1)
  for (std::int64_t si = 0; si < rows; ++si) {
    const auto i = static_cast<std::size_t>(si);
    for (std::size_t j = 0; j < n; ++j) {
      C[i * ldc + j] =
          dot_ref(spec, k, ops.a_row(i), ops.a_step(), ops.b_col(j), ops.b_step(), o.bias.at(i, j), o.random, i * n + j).value;
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
