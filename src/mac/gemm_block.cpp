// The GEMM of block-format inputs (docs/mac.md section 7), bit-identical to gemm_ref.
//
// The operands are quantized by the fast block quantizer as gemm_ref quantizes them (op(A) as
// an m x k matrix, op(B)^T as n x k, blocks along k) and turned into their integers (element
// value / block unit, exact). Each output is then its block dot product:
//  - the integer block sums in integer lanes (int16 elements into int32 sums where the
//    largest block sum fits, int32 into int64 otherwise, int64 into 128-bit sums for
//    mxfp8_e5m2), exact, so any order of the
//    additions gives the reference's sum; a block accumulator narrower than bits_needed() that
//    wraps is the exact sum reduced modulo 2^bits (addition modulo 2^bits is associative);
//  - each block sum, scaled by the two units (powers of two for hbfp and mx: exact in fp64),
//    added into the outer accumulator by an exact two-sum, rounded to odd in fp64 and then into
//    outer. Rounding to odd keeps every bit a rounding into a format of p <= 51 bits needs
//    (53 >= p + 2), so the one rounding of the exact sum is reproduced: docs/mac.md §7.3.
// Whatever falls outside those conditions — an outer format fp32 cannot hold or one that rounds
// stochastically, a saturating accumulator narrower than bits_needed(), NVFP4 (whose units are
// not powers of two), a block sum beyond 2^53 or a scale product beyond fp64's normal range —
// runs the reference block dot (block_dot_quantized) for that output. Threads take tasks of
// four rows by a run of columns of outputs, never a reduction.
#include "src/mac/gemm_block.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "mpsim/quantize.h"
#include "src/format/quantize_plan.h"
#include "src/mac/block_dot.h"
#include "src/mac/gemm_fast.h"
#include "src/mac/gemm_shape.h"

namespace mpsim::detail {

namespace {

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

// NVFP4's scales are not powers of two: its units leave the fast path, its values fp32.
bool has_nvfp4(const BlockMac& bm) { return bm.a.family() == BlockFamily::nvfp4 || bm.b.family() == BlockFamily::nvfp4; }

// One operand as integers: rows x k elements, and per (row, block) the unit's exponent (units
// are 2^e for hbfp and mx) or NaN. Rows padded with zeros to whole blocks so that kernels need
// no tail handling.
template <typename I>
struct IntOperand {
  std::size_t rows = 0, nkb = 0, L = 0;
  std::vector<I> ints;             // rows x (nkb * L)
  std::vector<int> unit_exp;       // rows x nkb
  std::vector<unsigned char> nan;  // rows x nkb
  const I* row(std::size_t r) const { return ints.data() + r * nkb * L; }
};

template <typename I, typename T>
IntOperand<I> to_ints(const T* q, const std::vector<BlockScale>& scales, std::size_t rows, std::size_t k, std::size_t L,
                      const BlockElementGrid& g, int threads) {
  IntOperand<I> o;
  o.rows = rows;
  o.L = L;
  o.nkb = ceil_div(k, L);
  o.ints.assign(rows * o.nkb * L, I(0));
  o.unit_exp.assign(rows * o.nkb, 0);
  o.nan.assign(rows * o.nkb, 0);
  const auto n_rows = static_cast<std::int64_t>(rows);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (std::int64_t sr = 0; sr < n_rows; ++sr) {
    const auto r = static_cast<std::size_t>(sr);
    for (std::size_t t = 0; t < o.nkb; ++t) {
      const BlockScale& s = scales[r * o.nkb + t];
      if (s.nan) {
        o.nan[r * o.nkb + t] = 1;
        continue;
      }
      const double unit = block_unit(s, g);  // 2^e: the reciprocal is exact
      o.unit_exp[r * o.nkb + t] = std::ilogb(unit);
      const double inv = 1.0 / unit;
      const std::size_t p0 = t * L, p1 = std::min(k, p0 + L);
      I* dst = o.ints.data() + r * o.nkb * L + p0;
      for (std::size_t p = p0; p < p1; ++p) dst[p - p0] = static_cast<I>(static_cast<double>(q[r * k + p]) * inv);
    }
  }
  return o;
}

// Whether the double path reproduces the reference's rounding of block sums into outer.
bool outer_is_fast(const Format& outer) {
  return outer.kind() == FormatKind::floating && !outer.rounding().stochastic() && outer.fits(Carrier::fp32);
}

// A value whose rounding into outer is the rounding of the exact total + s (both doubles; s
// an exact block sum): the two-sum, rounded to odd in fp64. An exact zero takes its sign as
// IEEE 754 says; infinities and NaN follow IEEE arithmetic, as the exact reference does.
double sum_to_odd(double total, double s, bool round_down) {
  if (!std::isfinite(total) || !std::isfinite(s)) return total + s;
  double sum = total + s;
  const double bb = sum - total;
  const double err = (total - (sum - bb)) + (s - bb);
  if (sum == 0) {
    // x + (-x) and -0 + +0 are +0, except toward -infinity (-0); +0 + +0 is +0 always.
    const bool both_plus = !std::signbit(total) && !std::signbit(s);
    return round_down && !both_plus ? -0.0 : 0.0;
  }
  std::uint64_t bits = std::bit_cast<std::uint64_t>(sum);
  if (err != 0 && (bits & 1) == 0) {
    // The odd neighbour on err's side: one code up in magnitude if err has sum's sign, else
    // down (sum is nonzero and even, so not the smallest magnitude; carries cross binades).
    bits = std::signbit(err) == std::signbit(sum) ? bits + 1 : bits - 1;
    sum = std::bit_cast<double>(bits);
  }
  return sum;
}

// Block sums of R <= 4 rows a, a + stride, ... against b, over L elements: out[r]. Integer
// arithmetic, exact, so the instruction set (the clones below) changes no bit.
template <typename I, typename S>
[[gnu::always_inline]] inline void block_sums_t(const I* a, std::size_t stride, std::size_t R, const I* b, std::size_t L,
                                               S* out) {
  if (R == 4) {
    S s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (std::size_t p = 0; p < L; ++p) {
      const S y = b[p];
      s0 += static_cast<S>(a[p]) * y;
      s1 += static_cast<S>(a[stride + p]) * y;
      s2 += static_cast<S>(a[2 * stride + p]) * y;
      s3 += static_cast<S>(a[3 * stride + p]) * y;
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
    return;
  }
  for (std::size_t r = 0; r < R; ++r) {
    S s = 0;
    for (std::size_t p = 0; p < L; ++p) s += static_cast<S>(a[r * stride + p]) * static_cast<S>(b[p]);
    out[r] = s;
  }
}

#define MPSIM_BLOCK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
MPSIM_BLOCK_CLONES void block_sums(const std::int16_t* a, std::size_t stride, std::size_t R, const std::int16_t* b,
                                   std::size_t L, std::int32_t* out) {
  block_sums_t(a, stride, R, b, L, out);
}
MPSIM_BLOCK_CLONES void block_sums(const std::int32_t* a, std::size_t stride, std::size_t R, const std::int32_t* b,
                                   std::size_t L, std::int64_t* out) {
  block_sums_t(a, stride, R, b, L, out);
}
// mxfp8_e5m2's 128-bit sums: scalar.
void block_sums(const std::int64_t* a, std::size_t stride, std::size_t R, const std::int64_t* b, std::size_t L, i128* out) {
  block_sums_t(a, stride, R, b, L, out);
}
#undef MPSIM_BLOCK_CLONES

// 2^e for e in fp64's normal exponents.
double pow2(int e) { return std::bit_cast<double>(static_cast<std::uint64_t>(e + 1023) << 52); }

// v as an fp64 number, if it has at most 53 significant bits (else false).
template <typename S>
bool to_double_exact(S v, double& out) {
  using U = std::conditional_t<(sizeof(S) > 8), u128, std::uint64_t>;
  if constexpr (sizeof(S) <= 4) {
    out = static_cast<double>(v);
    return true;
  } else if (v > -(S(1) << 53) && v < (S(1) << 53)) {
    out = static_cast<double>(v);
    return true;
  }
  U u = v < 0 ? U(0) - static_cast<U>(v) : static_cast<U>(v);
  int tz = 0;
  while ((u & 1) == 0) u >>= 1, ++tz;
  if (u >= (U(1) << 53)) return false;
  out = std::ldexp(v < 0 ? -static_cast<double>(u) : static_cast<double>(u), tz);
  return true;
}

// The reference block dot of output (i, j) from the quantized rows of qa and qb (read in place
// when they are fp64, from fp64 copies when fp32).
template <typename Q>
double reference_output(const MacSpec& spec, std::size_t n, std::size_t k, const std::vector<Q>& qa,
                        const std::vector<BlockScale>& sa, const std::vector<Q>& qb, const std::vector<BlockScale>& sb,
                        const GemmOptions& o, std::size_t i, std::size_t j) {
  const std::size_t nkb = ceil_div(k, spec.block->extent());
  const Q* a = qa.data() + i * k;
  const Q* b = qb.data() + j * k;
  const auto dot = [&](const double* x, const double* y) {
    return block_dot_quantized(spec, k, {x, 1, sa.data() + i * nkb}, {y, 1, sb.data() + j * nkb}, o.bias.at(i, j),
                               o.random, i * n + j)
        .value;
  };
  if constexpr (std::is_same_v<Q, double>) {
    return dot(a, b);
  } else {
    const std::vector<double> x(a, a + k), y(b, b + k);
    return dot(x.data(), y.data());
  }
}

// The fast path with element type I and exact block-sum type S (the caller checked that the
// operands' integers fit I and every block sum fits S).
template <typename I, typename S, typename T, typename Out>
void fast(const MacSpec& spec, std::size_t m, std::size_t n, std::size_t k, const std::vector<T>& qa,
          const std::vector<BlockScale>& sa, const std::vector<T>& qb, const std::vector<BlockScale>& sb, Out* C,
          std::size_t ldc, const GemmOptions& o, int threads) {
  const BlockMac& bm = *spec.block;
  const std::size_t L = bm.extent();
  const BlockElementGrid ga = block_element_grid(bm.a), gb = block_element_grid(bm.b);
  const IntOperand<I> A = to_ints<I>(qa.data(), sa, m, k, L, ga, threads);
  const IntOperand<I> B = to_ints<I>(qb.data(), sb, n, k, L, gb, threads);
  const Format& outer = *spec.outer_format();
  const RandomKey key = mac_random_key(o.random);
  const int bits = bm.bits();
  const bool reduce = bits < bm.bits_needed();  // wrap (validated: saturation does not come here)
  const std::size_t nkb = A.nkb;
  // The block accumulator's content: the exact sum, reduced modulo 2^bits if it wraps.
  const auto content = [&](S v) -> i128 {
    if (!reduce) return static_cast<i128>(v);
    BlockAccumulator acc{bits, true};
    acc.add(static_cast<i128>(v));  // |v| < 2^71: one modular reduction
    return acc.value;
  };

  const auto reference = [&](std::size_t i, std::size_t j) { return reference_output(spec, n, k, qa, sa, qb, sb, o, i, j); };

  // Rounding into outer, vectorized over a row of outputs (deterministic modes: the random key
  // plays no part).
  const QuantPlan plan = make_plan(outer, Carrier::fp64);
  const bool round_down = outer.rounding().mode == RoundMode::rd;
  // Tasks: four rows of outputs by a run of columns, enough of them for every thread whatever
  // the shape (a bias gradient has one row, a classifier's data gradient ten columns).
  const std::size_t groups = ceil_div(m, 4);
  const std::size_t want = threads > 1 ? 8 * static_cast<std::size_t>(threads) : 1;
  const std::size_t cw = std::clamp<std::size_t>(ceil_div(n, ceil_div(want, groups)), 16, 2048);
  const std::size_t chunks = ceil_div(n, cw);
  const auto tasks = static_cast<std::int64_t>(groups * chunks);
#pragma omp parallel num_threads(threads) if (threads > 1 && tasks > 1)
  {
    // Per task: the totals (in outer), the values to round next, and the outputs that need
    // the reference, row r's column j at r * cw + (j - j0).
    std::vector<double> total(4 * cw), next(4 * cw);
    std::vector<unsigned char> slow(4 * cw);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const std::size_t g = static_cast<std::size_t>(task) / chunks, c = static_cast<std::size_t>(task) % chunks;
      const std::size_t i0 = g * 4, R = std::min<std::size_t>(4, m - i0);
      const std::size_t j0 = c * cw, w = std::min(cw, n - j0);
      for (std::size_t r = 0; r < R; ++r) {
        for (std::size_t j = 0; j < w; ++j) next[r * cw + j] = o.bias.at(i0 + r, j0 + j);
        gemm_pack(plan, outer, next.data() + r * cw, w, total.data() + r * cw, 1);
      }
      std::fill(slow.begin(), slow.end(), 0);
      for (std::size_t t = 0; t < nkb; ++t) {
        for (std::size_t jj = 0; jj < w; ++jj) {
          const std::size_t j = j0 + jj;
          S s[4];
          block_sums(A.row(i0) + t * L, nkb * L, R, B.row(j) + t * L, L, s);
          for (std::size_t r = 0; r < R; ++r) {
            const std::size_t i = i0 + r, at = r * cw + jj;
            next[at] = total[at];
            if (slow[at]) continue;
            double sum = std::numeric_limits<double>::quiet_NaN();
            if (!A.nan[i * nkb + t] && !B.nan[j * nkb + t]) {
              // Exact in fp64: at most 53 significant bits, and |v| 2^e (1 <= |v| < 2^71) a
              // normal number.
              const int e = A.unit_exp[i * nkb + t] + B.unit_exp[j * nkb + t];
              double v;
              if (!(reduce ? to_double_exact(content(s[r]), v) : to_double_exact(s[r], v)) || e < -950 || e > 900) {
                slow[at] = 1;
                continue;
              }
              sum = v * pow2(e);
            }
            next[at] = sum_to_odd(total[at], sum, round_down);
          }
        }
        for (std::size_t r = 0; r < R; ++r) gemm_pack(plan, outer, next.data() + r * cw, w, total.data() + r * cw, 1);
      }
      for (std::size_t r = 0; r < R; ++r) {
        const std::size_t i = i0 + r;
        for (std::size_t jj = 0; jj < w; ++jj) {
          const std::size_t j = j0 + jj, at = r * cw + jj;
          double v = slow[at] ? reference(i, j) : total[at];
          if (!slow[at] && spec.out) v = quantize(v, *spec.out, mac_random_index(i * n + j, 0, MacSite::out), key);
          C[i * ldc + j] = static_cast<Out>(v);
        }
      }
    }
  }
}

// Q: the type the operands are quantized in (T, or fp64 for NVFP4, whose elements times their
// 28-bit scales fp32 cannot always hold).
template <typename Q, typename T, typename Out>
void run(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const T* A, std::size_t lda,
         const T* B, std::size_t ldb, Out* C, std::size_t ldc, const GemmOptions& o) {
  const BlockMac& bm = *spec.block;
  // A small GEMM runs on one thread: waking another costs more than it saves (and the thread
  // count changes no result).
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int threads = work < 131072.0 ? 1 : std::max(1, o.threads > 0 ? o.threads : omp_get_max_threads());
  // op(A) as m x k and op(B)^T as n x k, row-major, then quantized in place as gemm_ref does.
  std::vector<Q> qa(m * k), qb(n * k);
  gather_reduction_rows(GemmOperands<T>{op, A, lda, B, ldb}, m, n, k, qa.data(), qb.data());
  const std::vector<BlockScale> sa = quantize_block_rows(bm.a, m, k, qa.data(), threads);
  const std::vector<BlockScale> sb = quantize_block_rows(bm.b, n, k, qb.data(), threads);

  const BlockElementGrid ga = block_element_grid(bm.a), gb = block_element_grid(bm.b);
  const double bound = static_cast<double>(ga.max_int) * static_cast<double>(gb.max_int) * static_cast<double>(bm.extent());
  if (gemm_block_is_fast(spec)) {
    const auto below = [&](double limit) { return static_cast<double>(std::max(ga.max_int, gb.max_int)) < limit; };
    if (below(0x1p15) && bound < 0x1p31) {
      fast<std::int16_t, std::int32_t>(spec, m, n, k, qa, sa, qb, sb, C, ldc, o, threads);
    } else if (below(0x1p31) && bound < 0x1p63) {
      fast<std::int32_t, std::int64_t>(spec, m, n, k, qa, sa, qb, sb, C, ldc, o, threads);
    } else {
      // mxfp8_e5m2: element integers up to 2^32 (a 2^31 range of binades), sums up to 2^70.
      fast<std::int64_t, i128>(spec, m, n, k, qa, sa, qb, sb, C, ldc, o, threads);
    }
    return;
  }
  // The reference block dot for every output (rows shared between threads).
  const auto rows = static_cast<std::int64_t>(m);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && m > 1)
  for (std::int64_t si = 0; si < rows; ++si) {
    const auto i = static_cast<std::size_t>(si);
    for (std::size_t j = 0; j < n; ++j) C[i * ldc + j] = static_cast<Out>(reference_output(spec, n, k, qa, sa, qb, sb, o, i, j));
  }
}

}  // namespace

bool gemm_block_is_fast(const MacSpec& spec) {
  const BlockMac& bm = *spec.block;
  const bool powers_of_two = !has_nvfp4(bm);
  const bool saturating_narrow = !bm.wrap && bm.bits() < bm.bits_needed();
  return powers_of_two && !saturating_narrow && outer_is_fast(*spec.outer_format());
}

template <typename T, typename Out>
void gemm_block(const MacSpec& spec, GemmOp op, std::size_t m, std::size_t n, std::size_t k, const T* A, std::size_t lda,
                const T* B, std::size_t ldb, Out* C, std::size_t ldc, const GemmOptions& o) {
  if (has_nvfp4(*spec.block)) run<double>(spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
  else run<T>(spec, op, m, n, k, A, lda, B, ldb, C, ldc, o);
}

template void gemm_block<double, double>(const MacSpec&, GemmOp, std::size_t, std::size_t, std::size_t, const double*,
                                         std::size_t, const double*, std::size_t, double*, std::size_t, const GemmOptions&);
template void gemm_block<float, float>(const MacSpec&, GemmOp, std::size_t, std::size_t, std::size_t, const float*,
                                       std::size_t, const float*, std::size_t, float*, std::size_t, const GemmOptions&);

}  // namespace mpsim::detail
