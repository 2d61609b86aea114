#include "src/nn/layer_gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mpsim/gemm.h"
#include "mpsim/quantize.h"

namespace mpsim::detail {

namespace {

void fill_bias(std::size_t m, std::size_t n, float* C, std::size_t ldc, const float* bias, BiasAxis axis) {
  for (std::size_t i = 0; i < m; ++i) {
    for (std::size_t j = 0; j < n; ++j) {
      C[i * ldc + j] = axis == BiasAxis::row ? bias[i] : axis == BiasAxis::col ? bias[j] : 0.0f;
    }
  }
}

int to_int(std::size_t v) { return static_cast<int>(v); }

}  // namespace

void layer_gemm(const std::optional<MacSpec>& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k,
                const float* A, std::size_t lda, const float* B, std::size_t ldb, float* C, std::size_t ldc,
                const float* bias, BiasAxis axis, const MacRandom& rnd, int threads) {
  if (bias == nullptr) axis = BiasAxis::none;
  if (m == 0 || n == 0) return;
  if (!spec) {
    // Without a bias C is simply overwritten (beta = 0), saving a pass over it.
    if (axis != BiasAxis::none || k == 0) fill_bias(m, n, C, ldc, bias, axis);
    if (k == 0) return;
    // OpenBLAS's thread count is a library-wide setting (and not free to change): set only when
    // it differs, and never from inside a parallel region, where other threads share it.
    const int team = threads > 0 ? threads : omp_get_max_threads();
    if (!omp_in_parallel() && openblas_get_num_threads() != team) openblas_set_num_threads(team);
    const CBLAS_TRANSPOSE ta = op == GemmOp::tn ? CblasTrans : CblasNoTrans;
    const CBLAS_TRANSPOSE tb = op == GemmOp::nt ? CblasTrans : CblasNoTrans;
    cblas_sgemm(CblasRowMajor, ta, tb, to_int(m), to_int(n), to_int(k), 1.0f, A, to_int(lda), B, to_int(ldb),
                axis == BiasAxis::none ? 0.0f : 1.0f, C, to_int(ldc));
    return;
  }
  std::vector<double> bias64;
  GemmOptions o;
  o.random = rnd;
  o.threads = threads;
  if (axis != BiasAxis::none) {
    const std::size_t count = axis == BiasAxis::row ? m : n;
    bias64.assign(bias, bias + count);
    o.bias.data = bias64.data();
    o.bias.row_stride = axis == BiasAxis::row ? 1 : 0;
    o.bias.col_stride = axis == BiasAxis::col ? 1 : 0;
  }
  gemm(*spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
}

void fp32_gemm_serial(GemmOp op, std::size_t m, std::size_t n, std::size_t k, const float* A, std::size_t lda,
                      const float* B, std::size_t ldb, float beta, float* C, std::size_t ldc) {
  if (m == 0 || n == 0) return;
  const CBLAS_TRANSPOSE ta = op == GemmOp::tn ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = op == GemmOp::nt ? CblasTrans : CblasNoTrans;
  cblas_sgemm(CblasRowMajor, ta, tb, to_int(m), to_int(n), to_int(k), 1.0f, A, to_int(lda), B, to_int(ldb), beta, C,
              to_int(ldc));
}

SerialBlas::SerialBlas(int team) {
  if (omp_in_parallel()) return;  // OpenBLAS is serial here anyway, and the setting is shared
  if (team > 1 && openblas_get_parallel() == OPENBLAS_OPENMP) return;  // serial inside the loop's region
  blas_threads_ = openblas_get_num_threads();
  omp_threads_ = omp_get_max_threads();
  if (blas_threads_ == 1) return;
  openblas_set_num_threads(1);
  changed_ = true;
}

SerialBlas::~SerialBlas() {
  if (!changed_) return;
  openblas_set_num_threads(blas_threads_);
  omp_set_num_threads(omp_threads_);  // OpenBLAS's setter changed OpenMP's default too
}

void check_ones_operand(const std::optional<MacSpec>& spec, const std::string& layer) {
  if (!spec) return;
  if (spec->block) {
    // A block of ones quantizes to ones wherever the scale is a power of two (hbfp, mx); NVFP4's
    // scales (amax / 6 / 448, rounded) are not, and its ones come out near 1, not at 1.
    for (const BlockFormat* f : {&spec->block->a, &spec->block->b}) {
      std::vector<double> ones(spec->block->extent(), 1.0);
      quantize_blocks_ref(*f, ones.data(), ones.data(), BlockLayout{{1, ones.size()}, -1});
      if (std::any_of(ones.begin(), ones.end(), [](double v) { return v != 1.0; })) {
        throw MacSpecError("layer " + layer + ": the bias gradient multiplies by 1, which input format " + f->to_string() +
                           " cannot hold exactly; give this layer no bias or another input format");
      }
    }
    return;
  }
  for (const Format* f : {&spec->a, &spec->b}) {
    if (quantize(1.0, *f) != 1.0) {
      throw MacSpecError("layer " + layer + ": the bias gradient multiplies by 1, which input format " + f->to_string() +
                         " cannot hold exactly; give this layer no bias or another input format");
    }
  }
}

void bias_gradient(const std::optional<MacSpec>& spec, bool transposed, std::size_t rows, std::size_t len, const float* D,
                   std::size_t ldd, float* db, const MacRandom& rnd, int threads) {
  // Ones for the calling thread, grown on demand and never changed otherwise.
  thread_local std::vector<float> ones;
  if (ones.size() < len) ones.assign(len, 1.0f);
  layer_gemm(spec, transposed ? GemmOp::tn : GemmOp::nn, rows, 1, len, D, ldd, ones.data(), 1, db, 1, nullptr,
             BiasAxis::none, rnd, threads);
}

}  // namespace mpsim::detail
