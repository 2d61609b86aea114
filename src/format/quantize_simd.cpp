// The SIMD quantizer and the SIMD Philox: one source, compiled by Highway's foreach_target for
// AVX-512 (AVX3), AVX2 and one lane (SCALAR), dispatched at run time (internal; the public API
// is quantize_array.h and its driver is quantize_array.cpp).
//
// How a lane rounds (fp32 shown; fp64 is the same with P = 52, EB = 1023 and 64-bit lanes):
// the input's magnitude bits u = [E | m] give the exact significand sig = m + 2^23 (E > 0) or
// m (E = 0) and the binade Eeff = max(E, 1), so |x| = sig * 2^(Eeff - 150) exactly. The
// format's quantum in that binade is a power of two 2^(Eeff - 150 + d); d (the number of sig
// bits the format cannot keep) depends only on Eeff. Then K = sig >> d and rem = sig - (K << d)
// split |x| exactly into kept part and discarded fraction rem / 2^d, and every rounding mode
// is a comparison on these integers: rne/rna compare 2*rem with 2^d, ro/ru/rd test rem != 0,
// sr compares the first random word with floor(rem * 2^(32 - d)) (exact unless the two are
// equal and rem has bits below: then the lane goes to the scalar reference, which reads more
// words; probability 2^-32), srN adds the top N random bits to floor(rem * 2^(N - d)).
// K becomes the format's magnitude code with one add (codes are monotone and a carry out of
// the mantissa is the next binade's first code), and the code becomes the carrier value with a
// shift and an add (normal codes) or an exact integer-to-float conversion and a power-of-two
// scale (the binade of exponent field 0). Nothing is rounded except by the decision above, so
// the lane equals the scalar reference bit for bit; tests check that on every target.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/format/quantize_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "mpsim/quantize.h"
#include "mpsim/rng.h"
#include "quantize_plan.h"
#include "quantize_simd.h"
// The per-lane rounding kernels, for this target (re-included by foreach_target).
#include "src/format/quantize_lanes-inl.h"

HWY_BEFORE_NAMESPACE();
namespace mpsim::detail::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---- Philox4x32-10 over many blocks at once ------------------------------------------------

// Words PhiloxBlocks may write past 4 * nblocks: up to 4 interleaved vectors of 64-bit lanes.
constexpr std::size_t kPhiloxSlack = 4 * 4 * HWY_MAX_BYTES / 8;

// Blocks g0 .. g0 + nblocks - 1 of word number `word`: out[4b + j] is output word j of block
// g0 + b (see rng.h). Writes whole groups of vectors: out must have room for 4 * nblocks words
// plus kPhiloxSlack.
HWY_INLINE void PhiloxBlocks(const RandomKey& key, std::uint32_t word, std::uint64_t g0,
                             std::size_t nblocks, std::uint32_t* HWY_RESTRICT out) {
  const std::array<std::uint32_t, 2> k = {static_cast<std::uint32_t>(key.seed),
                                          static_cast<std::uint32_t>(key.seed >> 32)};
#if HWY_TARGET == HWY_SCALAR
  for (std::size_t b = 0; b < nblocks; ++b) {
    const std::uint64_t g = g0 + b;
    const auto blk = philox4x32_10(
        {static_cast<std::uint32_t>(g), static_cast<std::uint32_t>(g >> 32), key.stream, word}, k);
    std::memcpy(out + 4 * b, blk.data(), sizeof blk);
  }
#else
  // Each 64-bit lane holds one block; the four state words live in the low halves of four
  // vectors (the high halves carry junk that MulEven ignores), so a 32x32->64 product is one
  // MulEven and its high half one shift. kInterleave independent vectors go through the rounds
  // together: one alone would wait on the multiplier's latency every round.
  constexpr std::size_t kInterleave = 4;
  const hn::ScalableTag<std::uint64_t> d64;
  const hn::Repartition<std::uint32_t, decltype(d64)> d32;
  using V = hn::Vec<decltype(d64)>;
  const std::size_t N = hn::Lanes(d64);
  const auto mul0 = hn::Set(d32, 0xD2511F53u);
  const auto mul1 = hn::Set(d32, 0xCD9E8D57u);
  const auto low32 = hn::Set(d64, 0xFFFFFFFFull);
  for (std::size_t b = 0; b < nblocks; b += kInterleave * N) {
    V c0[kInterleave], c1[kInterleave], c2[kInterleave], c3[kInterleave];
    for (std::size_t v = 0; v < kInterleave; ++v) {
      const auto g = hn::Iota(d64, g0 + b + v * N);
      c0[v] = g;
      c1[v] = hn::ShiftRight<32>(g);
      c2[v] = hn::Set(d64, std::uint64_t{key.stream});
      c3[v] = hn::Set(d64, std::uint64_t{word});
    }
    std::uint32_t k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; ++r) {
      const auto key0 = hn::Set(d64, std::uint64_t{k0});
      const auto key1 = hn::Set(d64, std::uint64_t{k1});
      for (std::size_t v = 0; v < kInterleave; ++v) {
        const auto p0 = hn::MulEven(hn::BitCast(d32, c0[v]), mul0);
        const auto p1 = hn::MulEven(hn::BitCast(d32, c2[v]), mul1);
        c0[v] = hn::Xor3(hn::ShiftRight<32>(p1), c1[v], key0);
        c1[v] = p1;
        c2[v] = hn::Xor3(hn::ShiftRight<32>(p0), c3[v], key1);
        c3[v] = p0;
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (std::size_t v = 0; v < kInterleave; ++v) {
      const auto y01 = hn::Or(hn::And(c0[v], low32), hn::ShiftLeft<32>(c1[v]));
      const auto y23 = hn::Or(hn::And(c2[v], low32), hn::ShiftLeft<32>(c3[v]));
      hn::StoreInterleaved2(y01, y23, d64, reinterpret_cast<std::uint64_t*>(out + 4 * (b + v * N)));
    }
  }
#endif
}

// Word 0 of the random bits of elements i0 .. i0 + len - 1 (len <= 1024), generated into
// `words`; returns where element i0's word is.
HWY_INLINE const std::uint32_t* ChunkWords(const RandomKey& key, std::uint64_t i0, std::size_t len,
                                           std::uint32_t* HWY_RESTRICT words) {
  const std::uint64_t g0 = i0 >> 2, g1 = (i0 + len - 1) >> 2;
  if (HWY_UNLIKELY(g1 < g0)) {  // the index wraps past 2^64 inside this chunk: one word at a time
    for (std::size_t i = 0; i < len; ++i) words[i] = random_word(key, i0 + i, 0);
    return words;
  }
  PhiloxBlocks(key, 0, g0, static_cast<std::size_t>(g1 - g0 + 1), words);
  return words + (i0 & 3);
}

// Word 0 of elements first .. first + n - 1, in order.
void RandomWords(const RandomKey& key, std::uint64_t first, std::size_t n, std::uint32_t* out) {
  constexpr std::size_t kChunk = 1024;
  alignas(64) std::uint32_t buf[kChunk + 8 + kPhiloxSlack];
  for (std::size_t c = 0; c < n; c += kChunk) {
    const std::size_t len = std::min(kChunk, n - c);
    std::memcpy(out + c, ChunkWords(key, first + c, len, buf), len * sizeof(std::uint32_t));
  }
}

// ---- arrays ------------------------------------------------------------------------------


template <RoundMode MODE, int kKind, typename T>
HWY_INLINE void QuantizeRange(const QuantPlan& plan, const Format& f, const T* in, T* out, std::size_t n,
                              std::uint64_t first, const RandomKey& key) {
  // A local copy: the compiler may then keep its fields in registers (a reference could alias
  // the output array, forcing a reload of every field for every vector).
  const QuantPlan p = plan;
  const hn::ScalableTag<T> d;
  const std::size_t N = hn::Lanes(d);
  constexpr bool kRandom = MODE == RoundMode::sr || MODE == RoundMode::srn;
  constexpr std::size_t kChunk = 1024;
  constexpr std::size_t kMaxLanes = HWY_MAX_BYTES / sizeof(T);
  alignas(64) std::uint32_t words[kChunk + 8 + kPhiloxSlack];
  alignas(64) T tail_in[kMaxLanes];
  alignas(64) std::uint32_t tail_words[kMaxLanes];

  for (std::size_t c = 0; c < n; c += kChunk) {
    const std::size_t len = std::min(kChunk, n - c);
    const std::uint64_t i0 = first + c;
    const std::uint32_t* w = words;
    if constexpr (kRandom) w = ChunkWords(key, i0, len, words);
    std::size_t i = 0;
    for (; i + N <= len; i += N) {
      hn::StoreU(RoundVector<MODE, kKind>(d, p, f, hn::LoadU(d, in + c + i), w + i, i0 + i, key), d, out + c + i);
    }
    if (i < len) {
      const std::size_t rest = len - i;
      std::fill(tail_in, tail_in + kMaxLanes, T{0});
      std::fill(tail_words, tail_words + kMaxLanes, 0u);
      std::memcpy(tail_in, in + c + i, rest * sizeof(T));
      if constexpr (kRandom) std::memcpy(tail_words, w + i, rest * sizeof(std::uint32_t));
      alignas(64) T tail_out[kMaxLanes];
      hn::Store(RoundVector<MODE, kKind>(d, p, f, hn::Load(d, tail_in), tail_words, i0 + i, key), d, tail_out);
      std::memcpy(out + c + i, tail_out, rest * sizeof(T));
    }
  }
}

// ---- blocks: scale, round and scale back in one pass ------------------------------------

// Consecutive blocks of `seg` elements (seg a multiple of the vector length, so no vector
// straddles two blocks; the last block may be shorter): out[i] = round(in[i] * fwd[b]) * inv[b]
// for b = i / seg, where fwd and inv are 2^-X and 2^X of the block (NaN and 1 for a NaN block).
// The same per-lane kernels as QuantizeRange round the scaled values, with the random words of
// positions first + i; lanes they cannot decide go to the reference on the scaled value.
// Counts the scaled inputs above max_elem (clipped) and the nonzero inputs that became zero.
template <RoundMode MODE, int kKind>
HWY_INLINE BlockCounts BlockRange(const QuantPlan& plan, const Format& f, const float* in, float* out,
                                  std::size_t n, std::size_t seg, const float* fwd, const float* inv, float max_elem,
                                  std::uint64_t first, const RandomKey& key) {
  const QuantPlan p = plan;
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const std::size_t N = hn::Lanes(d);
  constexpr bool kRandom = MODE == RoundMode::sr || MODE == RoundMode::srn;
  constexpr std::size_t kChunk = 1024;
  constexpr std::size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);
  alignas(64) std::uint32_t words[kChunk + 8 + kPhiloxSlack];
  alignas(64) float tail_in[kMaxLanes], tail_out[kMaxLanes];
  alignas(64) std::uint32_t tail_words[kMaxLanes];
  const auto zero = hn::Zero(d);
  const auto vmax_elem = hn::Set(d, max_elem);
  // Per-lane counts (a true mask is all ones: subtracting it adds one), summed at the end.
  auto vclipped = hn::Zero(du), vflushed = hn::Zero(du);

  // One vector of block b at position i (its data at src, its words at w), into dst.
  const auto one = [&](const float* src, float* dst, const std::uint32_t* w, std::size_t b, std::size_t i) {
    const auto x = hn::LoadU(d, src);
    const auto xs = hn::Mul(x, hn::Set(d, fwd[b]));
    vclipped = hn::Sub(vclipped, hn::VecFromMask(du, hn::RebindMask(du, hn::Gt(hn::Abs(xs), vmax_elem))));  // not NaN lanes
    const auto y = RoundVector<MODE, kKind>(d, p, f, xs, w, first + i, key);
    const auto z = hn::Mul(y, hn::Set(d, inv[b]));
    vflushed = hn::Sub(vflushed, hn::VecFromMask(du, hn::RebindMask(du, hn::And(hn::Ne(x, zero), hn::Eq(z, zero)))));
    hn::StoreU(z, d, dst);
  };

  std::size_t b = 0, block_end = seg;
  for (std::size_t c = 0; c < n; c += kChunk) {
    const std::size_t len = std::min(kChunk, n - c);
    const std::uint64_t i0 = first + c;
    const std::uint32_t* w = words;
    if constexpr (kRandom) w = ChunkWords(key, i0, len, words);
    std::size_t i = 0;
    for (; i + N <= len; i += N) {
      if (c + i >= block_end) {
        ++b;
        block_end += seg;
      }
      one(in + c + i, out + c + i, w + i, b, c + i);
    }
    if (i < len) {
      if (c + i >= block_end) {
        ++b;
        block_end += seg;
      }
      const std::size_t rest = len - i;
      std::fill(tail_in, tail_in + kMaxLanes, 0.0f);
      std::fill(tail_words, tail_words + kMaxLanes, 0u);
      std::memcpy(tail_in, in + c + i, rest * sizeof(float));
      if constexpr (kRandom) std::memcpy(tail_words, w + i, rest * sizeof(std::uint32_t));
      one(tail_in, tail_out, tail_words, b, c + i);  // padding lanes are zeros: never counted
      std::memcpy(out + c + i, tail_out, rest * sizeof(float));
    }
  }
  // Lane sums in 64 bits (a lane counts at most n / lanes, far below 2^32).
  alignas(64) std::uint32_t lanes_c[kMaxLanes] = {}, lanes_f[kMaxLanes] = {};
  hn::Store(vclipped, du, lanes_c);
  hn::Store(vflushed, du, lanes_f);
  BlockCounts counts;
  for (std::size_t j = 0; j < N; ++j) {
    counts.clipped += lanes_c[j];
    counts.flushed += lanes_f[j];
  }
  return counts;
}

BlockCounts BlocksF32(const QuantPlan& p, const Format& f, const float* in, float* out, std::size_t n, std::size_t seg,
                      const float* fwd, const float* inv, float max_elem, std::uint64_t first, const RandomKey& key) {
#define MPSIM_BLOCK_MODE(m)                                                                              \
  case RoundMode::m:                                                                                     \
    if (p.kind == PlanKind::fixed) return BlockRange<RoundMode::m, 1>(p, f, in, out, n, seg, fwd, inv, max_elem, first, key); \
    if (p.sat_ieee) return BlockRange<RoundMode::m, 2>(p, f, in, out, n, seg, fwd, inv, max_elem, first, key);              \
    return BlockRange<RoundMode::m, 0>(p, f, in, out, n, seg, fwd, inv, max_elem, first, key);
  switch (p.rounding.mode) {
    MPSIM_BLOCK_MODE(rne)
    MPSIM_BLOCK_MODE(rna)
    MPSIM_BLOCK_MODE(rz)
    MPSIM_BLOCK_MODE(ru)
    MPSIM_BLOCK_MODE(rd)
    MPSIM_BLOCK_MODE(ro)
    MPSIM_BLOCK_MODE(sr)
    MPSIM_BLOCK_MODE(srn)
    case RoundMode::hyst: break;
  }
#undef MPSIM_BLOCK_MODE
  return {};
}

std::size_t LanesF32() { return hn::Lanes(hn::ScalableTag<float>()); }

// For consecutive blocks of seg fp32 elements (seg a multiple of the vector length; the last
// block may be shorter): the largest magnitude bits of each block and the smallest of
// (magnitude bits - 1), which skips zeros by wrapping them to the largest value.
void BlockScanF32(const float* x, std::size_t n, std::size_t seg, std::uint32_t* amax, std::uint32_t* minnz) {
  const hn::ScalableTag<std::uint32_t> du;
  const std::size_t N = hn::Lanes(du);
  const auto abs_mask = hn::Set(du, 0x7FFFFFFFu);
  const auto one = hn::Set(du, 1u);
  const auto* xb = reinterpret_cast<const std::uint32_t*>(x);
  std::size_t k = 0;
  for (std::size_t b0 = 0; b0 < n; b0 += seg, ++k) {
    const std::size_t len = std::min(seg, n - b0);
    auto vmax = hn::Zero(du);
    auto vmin = hn::Set(du, 0xFFFFFFFFu);
    std::size_t i = 0;
    for (; i + N <= len; i += N) {
      const auto u = hn::And(hn::LoadU(du, xb + b0 + i), abs_mask);
      vmax = hn::Max(vmax, u);
      vmin = hn::Min(vmin, hn::Sub(u, one));
    }
    std::uint32_t am = hn::GetLane(hn::MaxOfLanes(du, vmax)), mn = hn::GetLane(hn::MinOfLanes(du, vmin));
    for (; i < len; ++i) {
      const std::uint32_t u = xb[b0 + i] & 0x7FFFFFFFu;
      am = std::max(am, u);
      mn = std::min(mn, u - 1u);
    }
    amax[k] = am;
    minnz[k] = mn;
  }
}

template <typename T>
void QuantizeAny(const QuantPlan& p, const Format& f, const T* in, T* out, std::size_t n, std::uint64_t first,
                 const RandomKey& key) {
#define MPSIM_QUANTIZE_MODE(m)                                                    \
  case RoundMode::m:                                                              \
    if constexpr (RoundMode::m == RoundMode::rne) {                               \
      if (p.rne_bits_all) return QuantizeRange<RoundMode::m, 3>(p, f, in, out, n, first, key); \
    }                                                                             \
    if (p.kind == PlanKind::fixed) QuantizeRange<RoundMode::m, 1>(p, f, in, out, n, first, key); \
    else if (p.sat_ieee) QuantizeRange<RoundMode::m, 2>(p, f, in, out, n, first, key);  \
    else QuantizeRange<RoundMode::m, 0>(p, f, in, out, n, first, key);            \
    return;
  switch (p.rounding.mode) {
    MPSIM_QUANTIZE_MODE(rne)
    MPSIM_QUANTIZE_MODE(rna)
    MPSIM_QUANTIZE_MODE(rz)
    MPSIM_QUANTIZE_MODE(ru)
    MPSIM_QUANTIZE_MODE(rd)
    MPSIM_QUANTIZE_MODE(ro)
    MPSIM_QUANTIZE_MODE(sr)
    MPSIM_QUANTIZE_MODE(srn)
    case RoundMode::hyst: break;
  }
#undef MPSIM_QUANTIZE_MODE
}

void QuantizeF32(const QuantPlan& p, const Format& f, const float* in, float* out, std::size_t n,
                 std::uint64_t first, const RandomKey& key) {
  QuantizeAny(p, f, in, out, n, first, key);
}

void QuantizeF64(const QuantPlan& p, const Format& f, const double* in, double* out, std::size_t n,
                 std::uint64_t first, const RandomKey& key) {
  QuantizeAny(p, f, in, out, n, first, key);
}

std::int64_t ThisTarget() { return HWY_TARGET; }

}  // namespace mpsim::detail::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace mpsim::detail {

HWY_EXPORT(QuantizeF32);
HWY_EXPORT(QuantizeF64);
HWY_EXPORT(RandomWords);
HWY_EXPORT(ThisTarget);
HWY_EXPORT(BlocksF32);
HWY_EXPORT(LanesF32);
HWY_EXPORT(BlockScanF32);

void simd_block_scan(const float* x, std::size_t n, std::size_t seg, std::uint32_t* amax, std::uint32_t* minnz) {
  HWY_DYNAMIC_DISPATCH(BlockScanF32)(x, n, seg, amax, minnz);
}

BlockCounts simd_quantize_blocks(const QuantPlan& p, const Format& f, const float* in, float* out, std::size_t n,
                                 std::size_t seg, const float* fwd, const float* inv, float max_elem, std::uint64_t first,
                                 const RandomKey& key) {
  return HWY_DYNAMIC_DISPATCH(BlocksF32)(p, f, in, out, n, seg, fwd, inv, max_elem, first, key);
}

std::size_t simd_lanes_f32() { return HWY_DYNAMIC_DISPATCH(LanesF32)(); }

void simd_quantize(const QuantPlan& p, const Format& f, const float* in, float* out, std::size_t n,
                   std::uint64_t first, const RandomKey& key) {
  HWY_DYNAMIC_DISPATCH(QuantizeF32)(p, f, in, out, n, first, key);
}

void simd_quantize(const QuantPlan& p, const Format& f, const double* in, double* out, std::size_t n,
                   std::uint64_t first, const RandomKey& key) {
  HWY_DYNAMIC_DISPATCH(QuantizeF64)(p, f, in, out, n, first, key);
}

void simd_random_words(const RandomKey& key, std::uint64_t first, std::size_t n, std::uint32_t* out) {
  HWY_DYNAMIC_DISPATCH(RandomWords)(key, first, n, out);
}

std::int64_t simd_target() { return HWY_DYNAMIC_DISPATCH(ThisTarget)(); }

}  // namespace mpsim::detail
#endif  // HWY_ONCE
