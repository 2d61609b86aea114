#include "src/nn/im2col.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace mpsim::detail {

namespace {

// For every kernel offset q < r and output position o < out: the input position
// o*stride - pad + q, or -1 where it falls into the padding.
std::vector<std::ptrdiff_t> input_index_table(std::size_t r, std::size_t out, std::size_t in, std::size_t stride,
                                              std::size_t pad) {
  std::vector<std::ptrdiff_t> t(r * out);
  for (std::size_t q = 0; q < r; ++q) {
    for (std::size_t o = 0; o < out; ++o) {
      const auto pos = static_cast<std::ptrdiff_t>(o * stride + q) - static_cast<std::ptrdiff_t>(pad);
      t[q * out + o] = pos >= 0 && pos < static_cast<std::ptrdiff_t>(in) ? pos : -1;
    }
  }
  return t;
}

// For every kernel offset q < r and input position i < in: the output position o with
// o*stride - pad + q == i, or -1 where there is none (the tap falls outside dy: before its start,
// past its end, or between two strided outputs).
std::vector<std::ptrdiff_t> output_index_table(std::size_t r, std::size_t in, std::size_t out, std::size_t stride,
                                               std::size_t pad) {
  std::vector<std::ptrdiff_t> t(r * in);
  for (std::size_t q = 0; q < r; ++q) {
    for (std::size_t i = 0; i < in; ++i) {
      const auto u = static_cast<std::ptrdiff_t>(i + pad) - static_cast<std::ptrdiff_t>(q);
      const auto s = static_cast<std::ptrdiff_t>(stride);
      const bool ok = u >= 0 && u % s == 0 && u / s < static_cast<std::ptrdiff_t>(out);
      t[q * in + i] = ok ? u / s : -1;
    }
  }
  return t;
}

}  // namespace

void check_parameter(const Parameter& p, const Shape& expected, const std::string& layer) {
  if (p.value.shape() != expected || p.grad.shape() != expected) {
    throw std::logic_error("layer " + layer + ": parameter " + p.name + " has shape " + to_string(p.value.shape()) +
                           " (gradient " + to_string(p.grad.shape()) + "), expected " + to_string(expected));
  }
}

int loop_threads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

void im2col(const ConvGeometry& g, const float* x, float* cols, int threads) {
  const auto rows = input_index_table(g.r, g.ho, g.h, g.stride, g.pad);
  const auto cols_of = input_index_table(g.r, g.wo, g.w, g.stride, g.pad);
  const std::size_t L = g.out_pixels(), width = g.n * L;
  // One task per (matrix row, sample): a contiguous run of ho*wo outputs.
  const auto tasks = static_cast<std::int64_t>(g.crr() * g.n);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto row = static_cast<std::size_t>(t) / g.n, ni = static_cast<std::size_t>(t) % g.n;
    const std::size_t ci = row / (g.r * g.r), ri = (row / g.r) % g.r, si = row % g.r;
    const float* xc = x + (ni * g.c + ci) * g.in_pixels();
    float* out = cols + row * width + ni * L;
    const std::ptrdiff_t* src_col = cols_of.data() + si * g.wo;
    for (std::size_t oi = 0; oi < g.ho; ++oi) {
      float* o = out + oi * g.wo;
      const std::ptrdiff_t hi = rows[ri * g.ho + oi];
      if (hi < 0) {
        std::fill(o, o + g.wo, 0.0f);
        continue;
      }
      const float* xr = xc + static_cast<std::size_t>(hi) * g.w;
      for (std::size_t oj = 0; oj < g.wo; ++oj) o[oj] = src_col[oj] < 0 ? 0.0f : xr[src_col[oj]];
    }
  }
}

void gather_taps(const ConvGeometry& g, const float* dy, float* taps, int threads) {
  const auto rows = output_index_table(g.r, g.h, g.ho, g.stride, g.pad);
  const auto cols_of = output_index_table(g.r, g.w, g.wo, g.stride, g.pad);
  const std::size_t P = g.in_pixels(), width = g.n * P;
  const auto tasks = static_cast<std::int64_t>(g.krr() * g.n);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto row = static_cast<std::size_t>(t) / g.n, ni = static_cast<std::size_t>(t) % g.n;
    const std::size_t ki = row / (g.r * g.r), ri = (row / g.r) % g.r, si = row % g.r;
    const float* dyk = dy + (ni * g.k + ki) * g.out_pixels();
    float* out = taps + row * width + ni * P;
    const std::ptrdiff_t* src_col = cols_of.data() + si * g.w;
    for (std::size_t hi = 0; hi < g.h; ++hi) {
      float* o = out + hi * g.w;
      const std::ptrdiff_t oi = rows[ri * g.h + hi];
      if (oi < 0) {
        std::fill(o, o + g.w, 0.0f);
        continue;
      }
      const float* dr = dyk + static_cast<std::size_t>(oi) * g.wo;
      for (std::size_t wi = 0; wi < g.w; ++wi) o[wi] = src_col[wi] < 0 ? 0.0f : dr[src_col[wi]];
    }
  }
}

void channel_major_to_nchw(std::size_t n, std::size_t ch, std::size_t pix, const float* src, float* dst, int threads) {
  const auto tasks = static_cast<std::int64_t>(n * ch);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto ni = static_cast<std::size_t>(t) / ch, ci = static_cast<std::size_t>(t) % ch;
    if (pix) std::memcpy(dst + (ni * ch + ci) * pix, src + ci * n * pix + ni * pix, pix * sizeof(float));
  }
}

void pixel_major_to_nchw(std::size_t n, std::size_t ch, std::size_t pix, const float* src, float* dst, int threads) {
  const auto tasks = static_cast<std::int64_t>(n * ch);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto ni = static_cast<std::size_t>(t) / ch, ci = static_cast<std::size_t>(t) % ch;
    float* d = dst + (ni * ch + ci) * pix;
    const float* s = src + ni * pix * ch + ci;
    for (std::size_t p = 0; p < pix; ++p) d[p] = s[p * ch];
  }
}

void nchw_to_channel_major(std::size_t n, std::size_t ch, std::size_t pix, const float* src, float* dst, int threads) {
  const auto tasks = static_cast<std::int64_t>(n * ch);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto ni = static_cast<std::size_t>(t) / ch, ci = static_cast<std::size_t>(t) % ch;
    if (pix) std::memcpy(dst + ci * n * pix + ni * pix, src + (ni * ch + ci) * pix, pix * sizeof(float));
  }
}

}  // namespace mpsim::detail
