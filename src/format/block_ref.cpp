// The scalar reference of the block formats: the specification that the fast path
// (block_quantize.cpp) matches bit for bit. Plain loops over the block grid, written directly
// from the layout rules of block.h (independently of the fast path's band grid); every element
// is rounded once, by quantize_ref, into the element grid scaled to its block.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "block_grid.h"
#include "block_scale.h"
#include "mpsim/block.h"
#include "mpsim/quantize.h"

namespace mpsim {

namespace detail {

double nvfp4_element(double x, double S, const Rounding& r, std::uint64_t index, const RandomKey& key) {
  if (std::isnan(x)) return std::numeric_limits<double>::quiet_NaN();
  const bool neg = std::signbit(x);
  const double a = std::fabs(x);
  double q;
  if (a >= 8 * S) {
    q = 6 * S;  // beyond e2m1's top binade: every mode saturates to 6 (8 S is exact: a power of two times S)
  } else {
    // Binade of a / S, decided by exact comparisons (2 S and 4 S are fp64 numbers).
    const int k = a < 2 * S ? 0 : (a < 4 * S ? 1 : 2);
    IntSpec grid;
    grid.is_signed = false;
    grid.bits = k == 2 ? 2 : 3;  // z <= 4 reaches the next binade's first value; above 6 clamps to z = 3
    grid.scale = std::ldexp(S, k - 1);
    Rounding rm = r;
    if (neg && r.mode == RoundMode::ru) rm.mode = RoundMode::rd;
    else if (neg && r.mode == RoundMode::rd) rm.mode = RoundMode::ru;
    q = quantize_ref(a, Format::from_integer(grid, rm), index, key).value;
  }
  return neg ? -q : q;
}

}  // namespace detail

namespace {

using detail::ScaleRuleParams;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Calls visit(indices) for every block, in block order, with the row-major positions of its
// elements (padding positions are simply absent: a zero adds nothing to amax).
template <class Visit>
void for_each_block(const BlockFormat& f, const BlockLayout& layout, Visit visit) {
  const int a = detail::checked_axis(f, layout);
  const auto& s = layout.shape;
  std::size_t total = 1;
  for (auto d : s) total *= d;
  if (total == 0) return;
  std::vector<std::size_t> idx;
  if (f.tile() != 0) {
    const std::size_t T = static_cast<std::size_t>(f.tile());
    const std::size_t R = s[s.size() - 2], C = s.back(), B = total / (R * C);
    for (std::size_t m = 0; m < B; ++m)
      for (std::size_t r0 = 0; r0 < R; r0 += T)
        for (std::size_t c0 = 0; c0 < C; c0 += T) {
          idx.clear();
          for (std::size_t r = r0; r < std::min(R, r0 + T); ++r)
            for (std::size_t c = c0; c < std::min(C, c0 + T); ++c) idx.push_back((m * R + r) * C + c);
          visit(idx);
        }
    return;
  }
  const std::size_t L = s[static_cast<std::size_t>(a)];
  std::size_t inner = 1;
  for (std::size_t d = static_cast<std::size_t>(a) + 1; d < s.size(); ++d) inner *= s[d];
  const std::size_t outer = total / (L * inner);
  const std::size_t N = static_cast<std::size_t>(f.block_size());
  for (std::size_t o = 0; o < outer; ++o)
    for (std::size_t l0 = 0; l0 < L; l0 += N)
      for (std::size_t i = 0; i < inner; ++i) {
        idx.clear();
        for (std::size_t l = l0; l < std::min(L, l0 + N); ++l) idx.push_back((o * L + l) * inner + i);
        visit(idx);
      }
}

template <class T>
BlockStats reference(const BlockFormat& f, const T* in, T* out, const BlockLayout& layout, const BlockQuantizeOptions& o,
                     std::vector<BlockScale>* scales) {
  if constexpr (std::is_same_v<T, float>) f.require_fits(Carrier::fp32);
  BlockStats st;
  if (scales) scales->clear();
  const bool nv = f.family() == BlockFamily::nvfp4;
  const ScaleRuleParams rule(f);
  const Format e4m3fn_sat = Format::parse("e4m3fn:sat");

  // NVFP4's tensor scale comes from all finite values, read before anything is written.
  float s_tensor = 0;
  if (nv) {
    double amax_t = 0;
    for_each_block(f, layout, [&](const std::vector<std::size_t>& idx) {
      for (auto i : idx) {
        const double v = static_cast<double>(in[i]);
        if (std::isfinite(v)) amax_t = std::max(amax_t, std::fabs(v));
      }
    });
    s_tensor = detail::nvfp4_tensor_scale(amax_t);
  }

  for_each_block(f, layout, [&](const std::vector<std::size_t>& idx) {
    ++st.blocks;
    double amax = 0;
    bool bad = false;
    for (auto i : idx) {
      const double v = static_cast<double>(in[i]);
      if (!std::isfinite(v)) bad = true;
      else amax = std::max(amax, std::fabs(v));
    }
    BlockScale sc;
    if (bad) {
      ++st.nan_blocks;
      for (auto i : idx) out[i] = static_cast<T>(kNaN);
      sc.nan = true;
      sc.value = kNaN;
      sc.code = nv ? 0x7Fu : rule.nan_code;
      if (scales) scales->push_back(sc);
      return;
    }
    if (amax == 0) ++st.zero_blocks;
    const auto element_stats = [&](double x, double q, double limit) {
      if (limit >= 0 && std::fabs(x) > limit) ++st.clipped;
      if (x != 0 && q == 0) ++st.flushed;
    };
    if (nv) {
      const detail::Nvfp4Scale ns = detail::nvfp4_scale(amax, s_tensor, e4m3fn_sat);
      if (ns.clamped) ++st.scale_clamped;
      for (auto i : idx) {
        const double x = static_cast<double>(in[i]);
        const double q = detail::nvfp4_element(x, ns.S, f.rounding(), o.first_index + i, o.key);
        out[i] = static_cast<T>(q);
        element_stats(x, q, ns.S == 0 ? -1.0 : 6 * ns.S);
      }
      sc.exponent = ns.bs == 0 ? 0 : std::ilogb(ns.bs);
      sc.code = static_cast<std::uint32_t>(encode(e4m3fn_sat, ns.bs));
      sc.value = ns.S;
    } else {
      int X = rule.smin;
      if (amax > 0) {
        const auto r = rule.exponent(amax);
        X = r.X;
        if (r.clamped) ++st.scale_clamped;
      }
      const Format elem = f.element_format_at(X);
      const double limit = std::ldexp(rule.max_elem, X);
      for (auto i : idx) {
        const double x = static_cast<double>(in[i]);
        const double q = quantize_ref(x, elem, o.first_index + i, o.key).value;
        out[i] = static_cast<T>(q);
        element_stats(x, q, limit);
      }
      sc.exponent = X;
      sc.code = static_cast<std::uint32_t>(X + rule.bias);
      sc.value = std::ldexp(1.0, X);
    }
    if (scales) scales->push_back(sc);
  });
  return st;
}

}  // namespace

BlockStats quantize_blocks_ref(const BlockFormat& f, const double* in, double* out, const BlockLayout& layout,
                               const BlockQuantizeOptions& o, std::vector<BlockScale>* scales) {
  return reference(f, in, out, layout, o, scales);
}

BlockStats quantize_blocks_ref(const BlockFormat& f, const float* in, float* out, const BlockLayout& layout,
                               const BlockQuantizeOptions& o, std::vector<BlockScale>* scales) {
  return reference(f, in, out, layout, o, scales);
}

}  // namespace mpsim
