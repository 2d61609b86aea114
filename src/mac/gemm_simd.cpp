// The SIMD GEMM kernels (see gemm_fast.h for what they compute and why it is exact): one
// source, compiled by Highway for AVX-512, AVX2 and one lane like the array quantizer, with
// whose per-lane rounding kernels (quantize_lanes-inl.h) the accumulator is rounded.
//
// Lanes hold outputs: a vector is kVec consecutive columns of one row, and a register block is
// kBlock such vectors, so every lane runs its own dot product in order p = 0 .. k-1 and a
// reduction is never split or reordered.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/mac/gemm_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cstring>

#include "mpsim/quantize.h"
#include "src/format/quantize_lanes-inl.h"
#include "src/mac/gemm_fast.h"

HWY_BEFORE_NAMESPACE();
namespace mpsim::detail::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr std::size_t kBlock = 8;  // vectors of columns per register block

// Rounds the lanes of s into the accumulator (to nearest-even, the only mode gemm_fast admits,
// so the random key plays no part); lanes the vector kernel leaves to the scalar reference
// (none for the plans gemm_fast admits, but kept exact regardless) go through quantize().
template <bool kFixed, class D>
HWY_INLINE hn::Vec<D> RoundAcc(D d, const GemmFastPlan& plan, const Format& acc, hn::Vec<D> s) {
  return RoundVector<RoundMode::rne, kFixed ? 1 : 0>(d, plan.acc, acc, s, nullptr, 0, RandomKey{});
}

template <bool kFixed, typename T>
void Rows(const GemmFastPlan& plan, const Format& acc, const T* A, const T* Bpanels, std::size_t width, std::size_t n,
          std::size_t k, std::size_t i0, std::size_t i1, std::size_t q0, std::size_t q1, T* C) {
  const hn::ScalableTag<T> d;
  const std::size_t N = hn::Lanes(d);
  const auto lo = hn::Set(d, static_cast<T>(plan.fixed_lo));
  const auto hi = hn::Set(d, static_cast<T>(plan.fixed_hi));
  const auto clampv = hn::Set(d, static_cast<T>(plan.prod_clamp));
  alignas(64) T tail[kBlock * (HWY_MAX_BYTES / sizeof(T))];
  // Panel outer, rows inner: a panel (k x width) is read from memory once and reused for every
  // row from cache.
  for (std::size_t q = q0; q < q1; ++q) {
    for (std::size_t i = i0; i < i1; ++i) {
      const T* a = A + i * k;
      const std::size_t j0 = q * width;
      const std::size_t cols = std::min(width, n - j0);
      T* c = C + i * n + j0;
      // Accumulators from C (the rounded bias); columns past n start at zero and are dropped.
      hn::Vec<decltype(d)> accv[kBlock];
      if (cols == width) {
        for (std::size_t v = 0; v < kBlock; ++v) accv[v] = hn::LoadU(d, c + v * N);
      } else {
        std::memset(tail, 0, sizeof tail);
        std::memcpy(tail, c, cols * sizeof(T));
        for (std::size_t v = 0; v < kBlock; ++v) accv[v] = hn::Load(d, tail + v * N);
      }
      const T* b = Bpanels + q * k * width;
      for (std::size_t p = 0; p < k; ++p) {
        const auto av = hn::Set(d, a[p]);
        for (std::size_t v = 0; v < kBlock; ++v) {
          const auto prod = hn::Mul(av, hn::Load(d, b + p * width + v * N));  // exact (gemm_fast.h)
          if constexpr (kFixed) {
            // Convert the product into the accumulator (clamped first: beyond the range it
            // saturates either way), then add and saturate; NaN compares false and stays NaN.
            const auto pc = hn::IfThenElse(hn::Gt(prod, clampv), clampv,
                                           hn::IfThenElse(hn::Lt(prod, hn::Neg(clampv)), hn::Neg(clampv), prod));
            const auto qv = RoundAcc<true>(d, plan, acc, pc);
            const auto s = hn::Add(accv[v], qv);  // exact: both on the accumulator's grid
            accv[v] = hn::IfThenElse(hn::Gt(s, hi), hi, hn::IfThenElse(hn::Lt(s, lo), lo, s));
          } else {
            accv[v] = RoundAcc<false>(d, plan, acc, hn::Add(accv[v], prod));
          }
        }
      }
      if (cols == width) {
        for (std::size_t v = 0; v < kBlock; ++v) hn::StoreU(accv[v], d, c + v * N);
      } else {
        for (std::size_t v = 0; v < kBlock; ++v) hn::Store(accv[v], d, tail + v * N);
        std::memcpy(c, tail, cols * sizeof(T));
      }
    }
  }
}

void GemmF32(const GemmFastPlan& plan, const Format& acc, const float* A, const float* B, std::size_t width,
             std::size_t /*m*/, std::size_t n, std::size_t k, std::size_t i0, std::size_t i1, std::size_t q0,
             std::size_t q1, float* C) {
  if (plan.fixed) Rows<true>(plan, acc, A, B, width, n, k, i0, i1, q0, q1, C);
  else Rows<false>(plan, acc, A, B, width, n, k, i0, i1, q0, q1, C);
}

void GemmF64(const GemmFastPlan& plan, const Format& acc, const double* A, const double* B, std::size_t width,
             std::size_t /*m*/, std::size_t n, std::size_t k, std::size_t i0, std::size_t i1, std::size_t q0,
             std::size_t q1, double* C) {
  if (plan.fixed) Rows<true>(plan, acc, A, B, width, n, k, i0, i1, q0, q1, C);
  else Rows<false>(plan, acc, A, B, width, n, k, i0, i1, q0, q1, C);
}

std::size_t WidthF32() { return kBlock * hn::Lanes(hn::ScalableTag<float>()); }
std::size_t WidthF64() { return kBlock * hn::Lanes(hn::ScalableTag<double>()); }

}  // namespace mpsim::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace mpsim::detail {

HWY_EXPORT(GemmF32);
HWY_EXPORT(GemmF64);
HWY_EXPORT(WidthF32);
HWY_EXPORT(WidthF64);

void gemm_fast_f32(const GemmFastPlan& plan, const Format& acc, const float* A, const float* B, std::size_t width,
                   std::size_t m, std::size_t n, std::size_t k, std::size_t i0, std::size_t i1, std::size_t q0, std::size_t q1,
                   float* C) {
  HWY_DYNAMIC_DISPATCH(GemmF32)(plan, acc, A, B, width, m, n, k, i0, i1, q0, q1, C);
}
void gemm_fast_f64(const GemmFastPlan& plan, const Format& acc, const double* A, const double* B, std::size_t width,
                   std::size_t m, std::size_t n, std::size_t k, std::size_t i0, std::size_t i1, std::size_t q0, std::size_t q1,
                   double* C) {
  HWY_DYNAMIC_DISPATCH(GemmF64)(plan, acc, A, B, width, m, n, k, i0, i1, q0, q1, C);
}
std::size_t gemm_fast_width_f32() { return HWY_DYNAMIC_DISPATCH(WidthF32)(); }
std::size_t gemm_fast_width_f64() { return HWY_DYNAMIC_DISPATCH(WidthF64)(); }

}  // namespace mpsim::detail
#endif  // HWY_ONCE
