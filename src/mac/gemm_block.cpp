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
//    NVFP4's units carry its fp32 tensor scale: the scaled block sum is an exact pair hi + lo
//    (one FMA), added by a three-term sum rounded to odd (block_dot.h, sum3_to_odd).
// Whatever falls outside those conditions — an outer format fp32 cannot hold or one that rounds
// stochastically, a saturating accumulator narrower than bits_needed(), a block sum beyond 2^53
// or a scale product beyond fp64's normal range — runs the reference block dot
// (block_dot_quantized) for that output. Threads take tasks of
// four rows by a run of columns of outputs, never a reduction.
#include "src/mac/gemm_block.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
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

// NVFP4's operands are quantized in fp64 (an element times its 28-bit scale need not fit fp32).
bool has_nvfp4(const BlockMac& bm) { return bm.a.family() == BlockFamily::nvfp4 || bm.b.family() == BlockFamily::nvfp4; }

// One operand as integers: rows x k elements, and per (row, block) its unit or NaN. hbfp and mx
// units are 2^unit_exp. Where either operand is NVFP4 (`split`), each unit is kept as a factor
// per block times a factor per operand, unit = factor * tensor_scale, so that the product of two
// units stays exact (docs/mac.md section 7.3): NVFP4's is its e4m3fn block scale times e2m1's
// quantum 1/2 (4 bits) times its fp32 tensor scale; a power-of-two unit is the factor itself,
// with tensor_scale 1. Rows padded with zeros to whole blocks so that kernels need no tail
// handling.
template <typename I>
struct IntOperand {
  std::size_t rows = 0, nkb = 0, L = 0;
  std::vector<I> ints;             // rows x (nkb * L)
  std::vector<int> unit_exp;       // rows x nkb (not split)
  std::vector<double> factor;      // rows x nkb (split; 0 for NVFP4's zero blocks)
  double tensor_scale = 1;         // split
  std::vector<unsigned char> nan;  // rows x nkb
  const I* row(std::size_t r) const { return ints.data() + r * nkb * L; }
};

// The values of the 256 e4m3fn codes (NVFP4's block scales; NaN codes NaN).
std::vector<double> e4m3fn_values() {
  const Format f = Format::parse("e4m3fn");
  std::vector<double> v(256);
  for (std::uint64_t c = 0; c < 256; ++c) v[c] = decode(f, c).value;
  return v;
}

template <typename I, typename T>
IntOperand<I> to_ints(const BlockFormat& f, bool split, const T* q, const std::vector<BlockScale>& scales,
                      std::size_t rows, std::size_t k, std::size_t L, const BlockElementGrid& g, int threads) {
  IntOperand<I> o;
  o.rows = rows;
  o.L = L;
  o.nkb = ceil_div(k, L);
  o.ints.assign(rows * o.nkb * L, I(0));
  o.unit_exp.assign(rows * o.nkb, 0);
  o.nan.assign(rows * o.nkb, 0);
  const bool nv = f.family() == BlockFamily::nvfp4;
  if (split) {
    // An NVFP4 scale value is tensor scale * block scale, exactly (24 + 4 bits): the tensor
    // scale is the quotient of any block with a nonzero block scale, and every block agrees.
    static const std::vector<double> e4m3fn = e4m3fn_values();
    o.factor.assign(rows * o.nkb, 0.0);
    if (nv) o.tensor_scale = 0;
    for (std::size_t b = 0; b < scales.size(); ++b) {
      if (scales[b].nan) continue;
      if (!nv) {
        o.factor[b] = block_unit(scales[b], g);
        continue;
      }
      if (scales[b].value == 0) continue;
      const double bs = e4m3fn[scales[b].code & 0xFFu];
      if (o.tensor_scale == 0) o.tensor_scale = scales[b].value / bs;
      if (o.tensor_scale * bs != scales[b].value) {
        throw std::logic_error("gemm_block: NVFP4 block scales of one operand disagree on its tensor scale");
      }
      o.factor[b] = bs * g.quantum;
    }
  }
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
      const double unit = block_unit(s, g);
      const std::size_t p0 = t * L, p1 = std::min(k, p0 + L);
      I* dst = o.ints.data() + r * o.nkb * L + p0;
      if (nv) {
        // Elements n * unit with |n| <= 12: the quotient is exact (a zero block is all zeros).
        if (unit == 0) continue;
        for (std::size_t p = p0; p < p1; ++p) dst[p - p0] = static_cast<I>(static_cast<double>(q[r * k + p]) / unit);
        continue;
      }
      o.unit_exp[r * o.nkb + t] = std::ilogb(unit);
      const double inv = 1.0 / unit;  // unit is 2^e: the reciprocal is exact
      for (std::size_t p = p0; p < p1; ++p) dst[p - p0] = static_cast<I>(static_cast<double>(q[r * k + p]) * inv);
    }
  }
  return o;
}

// Whether the double path reproduces the reference's rounding of block sums into outer.
bool outer_is_fast(const Format& outer) {
  return outer.kind() == FormatKind::floating && !outer.rounding().stochastic() && outer.fits(Carrier::fp32);
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
  // With NVFP4 on either side, each block sum is (v F) T: v the integer sum, F the product of
  // the two block factors (at most 8 significant bits), T (`tensor`) that of the two tensor
  // scales (two fp32 values or ones: at most 48 bits), exact in fp64 away from its range's
  // ends. v F is exact for NVFP4 x NVFP4 (12 + 8 bits) and is checked (its FMA residual) where
  // a wide hbfp operand's sums meet NVFP4's factor; FMA then splits (v F) T exactly into hi + lo.
  const bool split = has_nvfp4(bm);
  const IntOperand<I> A = to_ints<I>(bm.a, split, qa.data(), sa, m, k, L, ga, threads);
  const IntOperand<I> B = to_ints<I>(bm.b, split, qb.data(), sb, n, k, L, gb, threads);
  const double tensor = A.tensor_scale * B.tensor_scale;
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
            if (A.nan[i * nkb + t] || B.nan[j * nkb + t]) {
              next[at] = sum_to_odd(total[at], std::numeric_limits<double>::quiet_NaN(), round_down);
              continue;
            }
            // The integer sum in fp64 (at most 53 significant bits, else the reference).
            double v;
            if (!(reduce ? to_double_exact(content(s[r]), v) : to_double_exact(s[r], v))) {
              slow[at] = 1;
              continue;
            }
            if (split) {
              const double F = A.factor[i * nkb + t] * B.factor[j * nkb + t];
              const double vf = v * F;
              const double hi = vf * tensor;
              const auto normal = [](double x) { return x == 0 || (std::fabs(x) > 0x1p-900 && std::fabs(x) < 0x1p900); };
              if (!normal(vf) || !normal(hi) || std::fma(v, F, -vf) != 0) {
                // A product could lose bits below fp64's normal range, a sum overflow, or v F
                // need more than 53 bits (a wide hbfp operand's sums beside NVFP4's factor).
                slow[at] = 1;
                continue;
              }
              const double lo = std::fma(vf, tensor, -hi);
              next[at] = lo == 0 ? sum_to_odd(total[at], hi, round_down) : sum3_to_odd(total[at], hi, lo);
              continue;
            }
            // Exact in fp64: |v| 2^e (1 <= |v| < 2^71) a normal number.
            const int e = A.unit_exp[i * nkb + t] + B.unit_exp[j * nkb + t];
            if (e < -950 || e > 900) {
              slow[at] = 1;
              continue;
            }
            next[at] = sum_to_odd(total[at], v * pow2(e), round_down);
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
  const bool saturating_narrow = !bm.wrap && bm.bits() < bm.bits_needed();
  return !saturating_narrow && outer_is_fast(*spec.outer_format());
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
