// The fast path of the block formats: bit-identical to block_ref.cpp, much faster.
//
// A tensor is cut into bands (block_grid.h): contiguous runs of memory whose blocks lie wholly
// inside them. Each band is handled in three passes over data that stays in cache:
//  1. the largest and the smallest nonzero magnitude of every block, from the magnitude bits
//     (integer max/min, which also spots NaN and infinity: their bits are the largest);
//  2. every element is multiplied by 2^-X of its block, which is exact (see below), and the
//     whole band is rounded by quantize_array's SIMD kernel into the element format at scale
//     2^0; stochastic rounding draws for element i the bits (key, first_index + i), as the
//     reference does, because the band is one contiguous run of positions;
//  3. every result is multiplied back by 2^X: one rounding of an exact product, so where the
//     value is not a carrier number (never for hbfp and mx, see docs) it rounds exactly as the
//     reference's conversion of its fp64 value does.
// Scaling by 2^-X changes no rounding decision: the element grid at scale 2^X is the grid at 2^0
// times 2^X, codes and parities included, so the exact fraction between neighbours is the same.
// It is exact when the scaled value stays a normal number (or zero) of the type it is computed
// in: fp32 when every scaled nonzero magnitude of the band is at least 2^-126 and 2^-X, 2^X are
// fp32 numbers, else fp64 (always exact for fp32 data). fp64 data whose scaled values would
// underflow fp64 (blocks mixing magnitudes more than 2^1000 apart) go element by element
// through the reference. Bands are independent, so OpenMP splits them freely: results do not
// depend on the number of threads.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "block_grid.h"
#include "block_scale.h"
#include "mpsim/block.h"
#include "mpsim/quantize.h"
#include "quantize_plan.h"
#include "quantize_simd.h"

namespace mpsim {

namespace {

using detail::BandGrid;
using detail::QuantPlan;
using detail::ScaleRuleParams;

// Elements per band when rows do not share blocks: a few pages, so that the three passes
// run in L1/L2 and OpenMP has enough bands to share.
constexpr std::size_t kBandElements = 4096;

template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using U = std::uint32_t;
  static constexpr U kAbs = 0x7FFFFFFFu;
  static constexpr U kInf = 0x7F800000u;
};
template <>
struct Bits<double> {
  using U = std::uint64_t;
  static constexpr U kAbs = 0x7FFFFFFFFFFFFFFFull;
  static constexpr U kInf = 0x7FF0000000000000ull;
};

template <typename T>
typename Bits<T>::U magnitude_bits(T x) {
  typename Bits<T>::U u;
  std::memcpy(&u, &x, sizeof u);
  return u & Bits<T>::kAbs;
}

template <typename T>
T from_bits(typename Bits<T>::U u) {
  T x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// ---- the loops over elements ----------------------------------------------------------------
// Plain loops that the compiler vectorizes; target_clones builds each for AVX-512, AVX2 and the
// baseline and picks one at load time. They only move bits (integer max/min of magnitudes) or
// multiply by powers of two, which is exact in every instruction set, so the choice never
// changes a result.
#define MPSIM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

template <typename T>
[[gnu::always_inline]] inline void scan_run_t(const T* x, std::size_t n, typename Bits<T>::U& am, typename Bits<T>::U& mn) {
  using U = typename Bits<T>::U;
  U a = am, m = mn;
  for (std::size_t c = 0; c < n; ++c) {
    const U u = magnitude_bits(x[c]);
    a = u > a ? u : a;
    const U v = static_cast<U>(u - 1);  // 0 wraps to the largest value: min skips zeros
    m = v < m ? v : m;
  }
  am = a;
  mn = m;
}
template <typename T>
[[gnu::always_inline]] inline void scan_cols_t(const T* x, std::size_t w, typename Bits<T>::U* am, typename Bits<T>::U* mn) {
  using U = typename Bits<T>::U;
  for (std::size_t c = 0; c < w; ++c) {
    const U u = magnitude_bits(x[c]);
    am[c] = u > am[c] ? u : am[c];
    const U v = static_cast<U>(u - 1);
    mn[c] = v < mn[c] ? v : mn[c];
  }
}
template <typename T, typename V>
[[gnu::always_inline]] inline void scale_run_t(const T* x, V* y, std::size_t n, V f) {
  for (std::size_t c = 0; c < n; ++c) y[c] = static_cast<V>(x[c]) * f;
}
template <typename T, typename V>
[[gnu::always_inline]] inline void scale_cols_t(const T* x, V* y, std::size_t w, const V* f) {
  for (std::size_t c = 0; c < w; ++c) y[c] = static_cast<V>(x[c]) * f[c];
}
// z = y * inv (one rounding into T of an exact product); returns how many nonzero x became 0.
// x is read before z is written: they may be the same array.
template <typename T, typename V>
[[gnu::always_inline]] inline std::uint64_t unscale_run_t(const V* y, const T* x, T* z, std::size_t n, V inv) {
  std::uint64_t flushed = 0;
  for (std::size_t c = 0; c < n; ++c) {
    const T xv = x[c];
    const T q = static_cast<T>(y[c] * inv);
    z[c] = q;
    flushed += static_cast<std::uint64_t>((xv != 0) & (q == 0));
  }
  return flushed;
}
template <typename T, typename V>
[[gnu::always_inline]] inline std::uint64_t unscale_cols_t(const V* y, const T* x, T* z, std::size_t w, const V* inv) {
  std::uint64_t flushed = 0;
  for (std::size_t c = 0; c < w; ++c) {
    const T xv = x[c];
    const T q = static_cast<T>(y[c] * inv[c]);
    z[c] = q;
    flushed += static_cast<std::uint64_t>((xv != 0) & (q == 0));
  }
  return flushed;
}

#define MPSIM_SCANS(T)                                                                                       \
  MPSIM_CLONES void scan_run(const T* x, std::size_t n, Bits<T>::U& am, Bits<T>::U& mn) {                \
    scan_run_t<T>(x, n, am, mn);                                                                             \
  }                                                                                                          \
  MPSIM_CLONES void scan_cols(const T* x, std::size_t w, Bits<T>::U* am, Bits<T>::U* mn) {               \
    scan_cols_t<T>(x, w, am, mn);                                                                            \
  }
#define MPSIM_KERNELS(T, V)                                                                                  \
  MPSIM_CLONES void scale_run(const T* x, V* y, std::size_t n, V f) { scale_run_t<T, V>(x, y, n, f); }       \
  MPSIM_CLONES void scale_cols(const T* x, V* y, std::size_t w, const V* f) { scale_cols_t<T, V>(x, y, w, f); } \
  MPSIM_CLONES std::uint64_t unscale_run(const V* y, const T* x, T* z, std::size_t n, V inv) {             \
    return unscale_run_t<T, V>(y, x, z, n, inv);                                                             \
  }                                                                                                          \
  MPSIM_CLONES std::uint64_t unscale_cols(const V* y, const T* x, T* z, std::size_t w, const V* inv) {     \
    return unscale_cols_t<T, V>(y, x, z, w, inv);                                                            \
  }

MPSIM_SCANS(float)
MPSIM_SCANS(double)
MPSIM_KERNELS(float, float)
MPSIM_KERNELS(float, double)
MPSIM_KERNELS(double, double)
#undef MPSIM_SCANS
#undef MPSIM_KERNELS

using detail::pow2d;
using detail::pow2f;

// floor(log2 |x|) of a positive finite magnitude given by its bits: the exponent field for
// normal numbers, ilogb for subnormals.
template <typename T>
int floor_log2(typename Bits<T>::U u) {
  constexpr int P = sizeof(T) == 4 ? 23 : 52, B = sizeof(T) == 4 ? 127 : 1023;
  const int e = static_cast<int>(u >> P);
  return e != 0 ? e - B : std::ilogb(from_bits<T>(u));
}

// Per-block decisions of one band.
struct BlockPlan {
  int X = 0;
  bool nan = false;
  bool reference = false;  // fp64 data that cannot be scaled exactly: element by element
  double limit = 0;        // max_elem * 2^X: larger magnitudes are clipped
  bool may_clip = false;   // amax > limit
};

// Scratch of one thread.
template <typename T>
struct Scratch {
  std::vector<typename Bits<T>::U> amax, minnz;
  std::vector<BlockPlan> blocks;
  bool any_special = false;  // some block is NaN or goes through the reference
  std::vector<float> y32, fwd32, inv32;
  std::vector<double> y64, fwd64, inv64;
};

// Calls fn(j, c0, c1, k) for every run of columns [c0, c1) of row j that belongs to block k of
// the band (k relative to the band's first block).
template <typename Fn>
void for_runs(const BandGrid& g, std::size_t rows, Fn fn) {
  for (std::size_t j = 0; j < rows; ++j) {
    for (std::size_t s = 0; s < g.per_row; ++s) {
      const std::size_t c0 = s * g.seg;
      fn(j, c0, std::min(g.width, c0 + g.seg), (g.shared ? 0 : j * g.per_row) + s);
    }
  }
}

template <typename T>
struct Context {
  const BlockFormat& f;
  const Format elem;        // element format at scale 2^0
  QuantPlan plan32, plan64;
  bool fused = false;  // fp32 blocks of whole vectors: the one-pass SIMD kernel
  float max_elem32 = 0;
  ScaleRuleParams rule;
  BandGrid g;
  const BlockQuantizeOptions& o;

  Context(const BlockFormat& fmt, const BlockLayout& layout, const BlockQuantizeOptions& opts)
      : f(fmt), elem(fmt.element_format()), rule(fmt), g(detail::make_band_grid(fmt, layout, kBandElements)), o(opts) {
    if constexpr (std::is_same_v<T, float>) plan32 = detail::make_plan(elem, Carrier::fp32);
    plan64 = detail::make_plan(elem, Carrier::fp64);
    fused = plan32.kind != detail::PlanKind::scalar && g.seg % detail::simd_lanes_f32() == 0;
    max_elem32 = static_cast<float>(rule.max_elem);  // an element value: exact in fp32
  }

  // Rounds n scaled values in place: the SIMD kernel, or the scalar reference where the format
  // has no kernel. Positions first .. first + n - 1.
  template <typename V>
  void round_run(const QuantPlan& p, V* y, std::size_t n, std::uint64_t first) const {
    if (p.kind == detail::PlanKind::scalar) {
      for (std::size_t i = 0; i < n; ++i) y[i] = quantize(y[i], elem, first + i, o.key);
    } else {
      detail::simd_quantize(p, elem, y, y, n, first, o.key);
    }
  }

  void band(std::size_t b, const T* in, T* out, Scratch<T>& s, BlockStats& st, BlockScale* scales) const {
    using U = typename Bits<T>::U;
    const std::size_t rows = g.rows(b);
    const std::size_t start = g.row_begin(b) * g.width;
    const std::size_t n = rows * g.width;
    const std::size_t nb = g.blocks_in(b);
    const T* x = in + start;
    T* z = out + start;

    // Pass 1: largest and smallest nonzero magnitude (as bits) of every block. x - 1 wraps 0
    // to the largest value, so the min of (bits - 1) skips zeros.
    const bool simd_scan = std::is_same_v<T, float> && fused && !g.shared && g.seg > 1;
    if (simd_scan) {
      s.amax.resize(nb);  // every entry is written by the scan
      s.minnz.resize(nb);
    } else {
      s.amax.assign(nb, 0);
      s.minnz.assign(nb, std::numeric_limits<U>::max());
    }
    if (g.seg == 1) {
      for (std::size_t j = 0; j < rows; ++j) {
        const std::size_t k0 = g.shared ? 0 : j * g.per_row;
        scan_cols(x + j * g.width, g.width, s.amax.data() + k0, s.minnz.data() + k0);
      }
    } else if (simd_scan) {
      // Rows of whole-vector blocks: one SIMD call per row.
      for (std::size_t j = 0; j < rows; ++j) {
        const std::size_t k0 = j * g.per_row;
        detail::simd_block_scan(reinterpret_cast<const float*>(x + j * g.width), g.width, g.seg,
                                reinterpret_cast<std::uint32_t*>(s.amax.data() + k0),
                                reinterpret_cast<std::uint32_t*>(s.minnz.data() + k0));
      }
    } else {
      for_runs(g, rows, [&](std::size_t j, std::size_t c0, std::size_t c1, std::size_t k) {
        scan_run(x + j * g.width + c0, c1 - c0, s.amax[k], s.minnz[k]);
      });
    }

    // Scale decisions, and which type can hold the scaled values exactly.
    s.blocks.resize(nb);
    s.fwd32.resize(nb);
    s.inv32.resize(nb);
    s.fwd64.resize(nb);
    s.inv64.resize(nb);
    bool use32 = std::is_same_v<T, float> && plan32.kind != detail::PlanKind::scalar;
    s.any_special = false;
    st.blocks += nb;
    for (std::size_t k = 0; k < nb; ++k) {
      BlockPlan& bp = s.blocks[k];
      bp = BlockPlan{};
      // The factors 2^-X and 2^X (fp32 ones valid when |X| <= 126, checked below). A NaN block
      // scales to NaN, so its elements round to NaN; reference blocks are filled separately.
      if (s.amax[k] >= Bits<T>::kInf) {
        bp.nan = true;
        s.any_special = true;
        ++st.nan_blocks;
        s.fwd32[k] = std::numeric_limits<float>::quiet_NaN();
        s.fwd64[k] = std::numeric_limits<double>::quiet_NaN();
        s.inv32[k] = 1.0f;
        s.inv64[k] = 1.0;
        continue;
      }
      if (s.amax[k] == 0) {
        ++st.zero_blocks;
        bp.X = 0;  // zeros stay zeros at any scale; the scale code reported is 0 (X = scale_min)
        bp.limit = std::numeric_limits<double>::infinity();
        s.fwd32[k] = s.inv32[k] = 1.0f;
        s.fwd64[k] = s.inv64[k] = 1.0;
        continue;
      }
      const auto r = rule.exponent(static_cast<double>(from_bits<T>(s.amax[k])), floor_log2<T>(s.amax[k]));
      bp.X = r.X;
      if (r.clamped) ++st.scale_clamped;
      bp.limit = rule.max_elem * pow2d(r.X);  // |X| <= 511: exact
      bp.may_clip = static_cast<double>(from_bits<T>(s.amax[k])) > bp.limit;
      const int lo = floor_log2<T>(static_cast<U>(s.minnz[k] + 1)) - r.X;
      if (lo < -126 || r.X < -126 || r.X > 126) use32 = false;
      if constexpr (std::is_same_v<T, double>) {
        bp.reference = lo < -1022;
        s.any_special = s.any_special || bp.reference;
      }
      if (std::is_same_v<T, float> && r.X >= -126 && r.X <= 126) {
        s.fwd32[k] = pow2f(-r.X);
        s.inv32[k] = pow2f(r.X);
      }
      s.fwd64[k] = bp.reference ? 0.0 : pow2d(-r.X);
      s.inv64[k] = bp.reference ? 1.0 : pow2d(r.X);
    }

    if (scales) report_scales(s, nb, scales + g.first_block(b));

    // Pass 2: scale, round the whole band, and pass 3: scale back (with the statistics).
    if constexpr (std::is_same_v<T, float>) {
      if (use32) {
        scale_and_round(s.y32, s.fwd32, s.inv32, plan32, b, x, z, n, rows, s, st);
        return;
      }
    }
    scale_and_round(s.y64, s.fwd64, s.inv64, plan64, b, x, z, n, rows, s, st);
  }

  // The scales of the band's nb blocks as the reference reports them: a zero block has the
  // smallest scale, a NaN block the NaN code.
  void report_scales(const Scratch<T>& s, std::size_t nb, BlockScale* dst) const {
    for (std::size_t k = 0; k < nb; ++k) {
      const BlockPlan& bp = s.blocks[k];
      BlockScale sc;
      if (bp.nan) {
        sc.nan = true;
        sc.value = std::numeric_limits<double>::quiet_NaN();
        sc.code = rule.nan_code;
      } else {
        sc.exponent = s.amax[k] == 0 ? rule.smin : bp.X;
        sc.code = static_cast<std::uint32_t>(sc.exponent + rule.bias);
        sc.value = std::ldexp(1.0, sc.exponent);
      }
      dst[k] = sc;
    }
  }

  // Elements of block k (of the band at x) whose magnitude exceeds limit.
  std::uint64_t count_clipped(const T* x, std::size_t rows, std::size_t k, double limit) const {
    std::uint64_t n = 0;
    const auto count = [&](const T* p, std::size_t len) {
      for (std::size_t c = 0; c < len; ++c) n += std::fabs(static_cast<double>(p[c])) > limit;
    };
    if (g.shared) {
      const std::size_t c0 = k * g.seg, c1 = std::min(g.width, c0 + g.seg);
      for (std::size_t j = 0; j < rows; ++j) count(x + j * g.width + c0, c1 - c0);
    } else {
      const std::size_t j = k / g.per_row, c0 = (k % g.per_row) * g.seg;
      count(x + j * g.width + c0, std::min(g.width, c0 + g.seg) - c0);
    }
    return n;
  }

  template <typename V>
  void scale_and_round(std::vector<V>& y, std::vector<V>& fwd, std::vector<V>& inv, const QuantPlan& p, std::size_t b,
                       const T* x, T* z, std::size_t n, std::size_t rows, Scratch<T>& s, BlockStats& st) const {
    // fwd and inv, 2^-X and 2^X of every block in the type V, were set with the decisions.
    // Clipped elements, counted before anything is written (in place, x is the output).
    const std::uint64_t first = o.first_index + g.row_begin(b) * g.width;
    if constexpr (std::is_same_v<T, float> && std::is_same_v<V, float>) {
      // Runs of whole vectors per block: scale, round and scale back in one SIMD pass, row by
      // row; the pass also counts clipped elements (scaled magnitude above the largest element:
      // exact, as the scaling is).
      if (fused && g.seg > 1) {
        for (std::size_t j = 0; j < rows; ++j) {
          const std::size_t k0 = g.shared ? 0 : j * g.per_row, e = j * g.width;
          const auto c = detail::simd_quantize_blocks(p, elem, x + e, z + e, g.width, g.seg, fwd.data() + k0, inv.data() + k0,
                                                      max_elem32, first + e, o.key);
          st.clipped += c.clipped;
          st.flushed += c.flushed;
        }
        return;
      }
    }
    // Clipped elements, counted before anything is written (in place, x is the output).
    for (std::size_t k = 0; k < s.blocks.size(); ++k) {
      if (s.blocks[k].may_clip) st.clipped += count_clipped(x, rows, k, s.blocks[k].limit);
    }
    y.resize(n);
    if (g.seg == 1) {
      for (std::size_t j = 0; j < rows; ++j) {
        const std::size_t k0 = g.shared ? 0 : j * g.per_row;
        scale_cols(x + j * g.width, y.data() + j * g.width, g.width, fwd.data() + k0);
      }
    } else {
      for_runs(g, rows, [&](std::size_t j, std::size_t c0, std::size_t c1, std::size_t k) {
        scale_run(x + j * g.width + c0, y.data() + j * g.width + c0, c1 - c0, fwd[k]);
      });
    }
    round_run(p, y.data(), n, first);

    // Blocks the scaling cannot serve: NaN blocks, and fp64 blocks through the reference.
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if (s.any_special) for_runs(g, rows, [&](std::size_t j, std::size_t c0, std::size_t c1, std::size_t k) {
      const BlockPlan& bp = s.blocks[k];
      if (!bp.nan && !bp.reference) return;
      const Format at = bp.reference ? f.element_format_at(bp.X) : elem;
      for (std::size_t c = c0; c < c1; ++c) {
        const std::size_t e = j * g.width + c;
        y[e] = static_cast<V>(bp.nan ? nan : quantize_ref(static_cast<double>(x[e]), at, first + e, o.key).value);
      }
    });

    // Pass 3.
    std::uint64_t flushed = 0;
    if (g.seg == 1) {
      for (std::size_t j = 0; j < rows; ++j) {
        const std::size_t k0 = g.shared ? 0 : j * g.per_row, e = j * g.width;
        flushed += unscale_cols(y.data() + e, x + e, z + e, g.width, inv.data() + k0);
      }
    } else {
      for_runs(g, rows, [&](std::size_t j, std::size_t c0, std::size_t c1, std::size_t k) {
        const std::size_t e = j * g.width + c0;
        flushed += unscale_run(y.data() + e, x + e, z + e, c1 - c0, inv[k]);
      });
    }
    st.flushed += flushed;
  }
};

BlockStats sum(const std::vector<BlockStats>& parts) {
  BlockStats t;
  for (const auto& p : parts) {
    t.blocks += p.blocks;
    t.zero_blocks += p.zero_blocks;
    t.nan_blocks += p.nan_blocks;
    t.clipped += p.clipped;
    t.flushed += p.flushed;
    t.scale_clamped += p.scale_clamped;
  }
  return t;
}

int thread_count(const BlockQuantizeOptions& o, std::size_t total, std::size_t bands) {
  const int t = o.threads > 0 ? o.threads : omp_get_max_threads();
  // Small tensors are not worth waking threads for.
  return (total < 4 * kBandElements || bands < 2) ? 1 : t;
}

}  // namespace

namespace detail {

double nvfp4_element_deterministic(double x, double S, RoundMode mode) {
  if (std::isnan(x)) return std::numeric_limits<double>::quiet_NaN();
  const bool neg = std::signbit(x);
  const double a = std::fabs(x);
  double q;
  if (a >= 8 * S) {
    q = 6 * S;  // beyond e2m1's top binade every mode saturates (S = 0: every element is a zero)
  } else {
    const double u = a < 2 * S ? 0.5 * S : (a < 4 * S ? S : 2 * S);  // exact: S times a power of two
    const bool top = a >= 4 * S;
    double z = std::floor(a / u);
    double r = std::fma(-z, u, a);
    if (r < 0) {
      z -= 1;
      r = std::fma(-z, u, a);
    }
    // Toward +-infinity on the magnitude: ru and rd swap for negative x.
    if (neg && mode == RoundMode::ru) mode = RoundMode::rd;
    else if (neg && mode == RoundMode::rd) mode = RoundMode::ru;
    const double half = 0.5 * u;
    const bool odd = (static_cast<int>(z) & 1) != 0;  // 0 <= z <= 3
    bool up = false;
    switch (mode) {
      case RoundMode::rne: up = r > half || (r == half && odd); break;
      case RoundMode::rna: up = r >= half; break;
      case RoundMode::ru: up = r > 0; break;
      case RoundMode::ro: up = r > 0 && !odd; break;
      default: break;  // rz, rd: toward zero
    }
    if (up) z += 1;
    if (top && z > 3) z = 3;  // e2m1fn:sat: 6 S is the largest value
    q = z * u;
  }
  return neg ? -q : q;
}

}  // namespace detail

namespace {

template <typename T>
BlockStats nvfp4_fast(const BlockFormat& f, const T* in, T* out, const BlockLayout& layout, const BlockQuantizeOptions& o,
                      BlockScale* scales) {
  const BandGrid g = detail::make_band_grid(f, layout, kBandElements);
  const int threads = thread_count(o, g.total, g.bands);
  // The tensor scale: a max over all finite magnitudes (order-free, so threads may split it).
  double amax_t = 0;
  const auto total = static_cast<std::int64_t>(g.total);
#pragma omp parallel for reduction(max : amax_t) num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < total; ++i) {
    const double v = std::fabs(static_cast<double>(in[i]));
    if (v < std::numeric_limits<double>::infinity()) amax_t = std::max(amax_t, v);
  }
  const float s_tensor = detail::nvfp4_tensor_scale(amax_t);
  const Format e4m3fn_sat = Format::parse("e4m3fn:sat");
  const RoundMode mode = f.rounding().mode;
  const bool deterministic = mode == RoundMode::rne || mode == RoundMode::rna || mode == RoundMode::rz ||
                             mode == RoundMode::ru || mode == RoundMode::rd || mode == RoundMode::ro;
  std::vector<BlockStats> parts(g.bands);
  const auto bands = static_cast<std::int64_t>(g.bands);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (std::int64_t b = 0; b < bands; ++b) {
    const auto ub = static_cast<std::size_t>(b);
    const std::size_t rows = g.rows(ub);
    const std::size_t start = g.row_begin(ub) * g.width;
    const std::size_t nb = g.blocks_in(ub);
    std::vector<double> amax(nb, 0.0);
    std::vector<char> bad(nb, 0);
    for_runs(g, rows, [&](std::size_t j, std::size_t c0, std::size_t c1, std::size_t k) {
      for (std::size_t c = c0; c < c1; ++c) {
        const double v = static_cast<double>(in[start + j * g.width + c]);
        if (!std::isfinite(v)) bad[k] = 1;
        else amax[k] = std::max(amax[k], std::fabs(v));
      }
    });
    BlockStats& st = parts[ub];
    std::vector<double> S(nb, 0.0);
    for (std::size_t k = 0; k < nb; ++k) {
      ++st.blocks;
      BlockScale sc;
      if (bad[k]) {
        ++st.nan_blocks;
        sc.nan = true;
        sc.value = std::numeric_limits<double>::quiet_NaN();
        sc.code = 0x7Fu;
      } else {
        if (amax[k] == 0) ++st.zero_blocks;
        const detail::Nvfp4Scale ns = detail::nvfp4_scale(amax[k], s_tensor, e4m3fn_sat);
        if (ns.clamped) ++st.scale_clamped;
        S[k] = ns.S;
        sc.exponent = ns.bs == 0 ? 0 : std::ilogb(ns.bs);
        sc.code = static_cast<std::uint32_t>(encode(e4m3fn_sat, ns.bs));
        sc.value = ns.S;
      }
      if (scales) scales[g.first_block(ub) + k] = sc;
    }
    for_runs(g, rows, [&](std::size_t j, std::size_t c0, std::size_t c1, std::size_t k) {
      for (std::size_t c = c0; c < c1; ++c) {
        const std::size_t e = start + j * g.width + c;
        const double x = static_cast<double>(in[e]);
        double q;
        if (bad[k]) {
          q = std::numeric_limits<double>::quiet_NaN();
        } else {
          q = deterministic ? detail::nvfp4_element_deterministic(x, S[k], mode)
                            : detail::nvfp4_element(x, S[k], f.rounding(), o.first_index + e, o.key);
          st.clipped += S[k] > 0 && std::fabs(x) > 6 * S[k];
        }
        out[e] = static_cast<T>(q);
        st.flushed += x != 0 && q == 0;
      }
    });
  }
  return sum(parts);
}

template <typename T>
BlockStats fast(const BlockFormat& f, const T* in, T* out, const BlockLayout& layout, const BlockQuantizeOptions& o,
                std::vector<BlockScale>* scale_out) {
  if constexpr (std::is_same_v<T, float>) f.require_fits(Carrier::fp32);
  BlockScale* scales = nullptr;
  if (scale_out) {
    scale_out->assign(detail::make_band_grid(f, layout, kBandElements).blocks(), BlockScale{});
    scales = scale_out->data();
  }
  if (f.family() == BlockFamily::nvfp4) return nvfp4_fast(f, in, out, layout, o, scales);
  const Context<T> ctx(f, layout, o);
  const BandGrid& g = ctx.g;
  const int threads = thread_count(o, g.total, g.bands);
  std::vector<BlockStats> parts(static_cast<std::size_t>(threads));
  const auto bands = static_cast<std::int64_t>(g.bands);
#pragma omp parallel num_threads(threads)
  {
    // Kept per thread between calls: no allocation or zero-filling in the steady state.
    thread_local Scratch<T> scratch;
    BlockStats& st = parts[static_cast<std::size_t>(omp_get_thread_num())];
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t b = 0; b < bands; ++b) ctx.band(static_cast<std::size_t>(b), in, out, scratch, st, scales);
  }
  return sum(parts);
}

}  // namespace

BlockStats quantize_blocks(const BlockFormat& f, const float* in, float* out, const BlockLayout& layout,
                           const BlockQuantizeOptions& o, std::vector<BlockScale>* scales) {
  return fast(f, in, out, layout, o, scales);
}

BlockStats quantize_blocks(const BlockFormat& f, const double* in, double* out, const BlockLayout& layout,
                           const BlockQuantizeOptions& o, std::vector<BlockScale>* scales) {
  return fast(f, in, out, layout, o, scales);
}

bool quantize_blocks_is_vectorized(const BlockFormat& f) {
  if (f.family() == BlockFamily::nvfp4) return false;
  return detail::make_plan(f.element_format(), Carrier::fp64).kind != detail::PlanKind::scalar;
}

}  // namespace mpsim
