#include "src/nn/im2col.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

namespace mpsim::detail {

namespace {

// The output positions o < out whose input position o*stride - pad + q lies in [0, in), for a
// kernel offset q: they form one range [lo, hi) (empty when lo == hi). Positions outside it
// read the zero padding.
struct Range {
  std::size_t lo = 0, hi = 0;
};

Range inside(std::size_t q, std::size_t out, std::size_t in, std::size_t stride, std::size_t pad) {
  // o*stride + q >= pad  and  o*stride + q < in + pad.
  const std::size_t lo = q >= pad ? 0 : (pad - q + stride - 1) / stride;
  const std::size_t hi = in + pad <= q ? 0 : (in + pad - q + stride - 1) / stride;
  Range r;
  r.hi = std::min(hi, out);
  r.lo = std::min(lo, r.hi);
  return r;
}

// The ranges of every kernel offset of a convolution, computed once per call rather than per
// row (each takes divisions).
struct KernelRanges {
  std::vector<Range> rows, cols;  // by ri, by si
  explicit KernelRanges(const ConvGeometry& g) : rows(g.r), cols(g.r) {
    for (std::size_t q = 0; q < g.r; ++q) {
      rows[q] = inside(q, g.ho, g.h, g.stride, g.pad);
      cols[q] = inside(q, g.wo, g.w, g.stride, g.pad);
    }
  }
};

// Zeroes the entries (oi, j) of a ho x wo plane with oi in `rows` and j outside `cols`: a few
// per row (at most the padding). Column by column, so that the compiler does not turn each
// row's handful of stores into a call to memset.
void zero_row_ends(float* plane, Range rows, Range cols, std::size_t wo) {
  for (std::size_t j = 0; j < cols.lo; ++j)
    for (std::size_t oi = rows.lo; oi < rows.hi; ++oi) plane[oi * wo + j] = 0.0f;
  for (std::size_t j = cols.hi; j < wo; ++j)
    for (std::size_t oi = rows.lo; oi < rows.hi; ++oi) plane[oi * wo + j] = 0.0f;
}

// One im2col row (kernel offset ri, si) of one sample's channel plane xc: ho*wo values.
void im2col_row(const ConvGeometry& g, const float* xc, const KernelRanges& kr, std::size_t ri, std::size_t si,
                float* out) {
  const Range rows = kr.rows[ri], cols = kr.cols[si];
  std::fill(out, out + rows.lo * g.wo, 0.0f);
  std::fill(out + rows.hi * g.wo, out + g.ho * g.wo, 0.0f);
  const std::size_t count = cols.hi - cols.lo;
  if (g.stride == 1 && g.wo == g.w && count > 0 && rows.hi > rows.lo) {
    // Output and input rows have the same length, so the valid outputs, row after row, read one
    // contiguous run of the input: one copy from the first valid output to the last, then the
    // few outputs at the row ends that read the neighbouring row instead of padding are zeroed.
    const std::size_t first = rows.lo * g.wo + cols.lo, last = (rows.hi - 1) * g.wo + cols.hi;
    const float* src = xc + (rows.lo + ri - g.pad) * g.w + (cols.lo + si - g.pad);
    std::memcpy(out + first, src, (last - first) * sizeof(float));
    zero_row_ends(out, rows, cols, g.wo);
    return;
  }
  for (std::size_t oi = rows.lo; oi < rows.hi; ++oi) {
    float* o = out + oi * g.wo;
    std::fill(o, o + cols.lo, 0.0f);
    std::fill(o + cols.hi, o + g.wo, 0.0f);
    if (count == 0) continue;
    // Both positions lie inside the input (the ranges say so), so the subtractions cannot wrap.
    const float* xr = xc + (oi * g.stride + ri - g.pad) * g.w + (cols.lo * g.stride + si - g.pad);
    if (g.stride == 1) {
      // A loop, not memcpy: the runs are short here (a row of a small map), where a library
      // call per run costs more than the copy.
      float* d = o + cols.lo;
      for (std::size_t j = 0; j < count; ++j) d[j] = xr[j];
    } else {
      for (std::size_t j = 0; j < count; ++j) o[cols.lo + j] = xr[j * g.stride];
    }
  }
}

// Adds one row (kernel offset ri, si) of the column gradient (ho*wo values) into the channel
// plane xc of dx. The row is scratch that is used once, so it may be changed.
MPSIM_VECTOR_CLONES
void col2im_row_add(const ConvGeometry& g, float* d, const KernelRanges& kr, std::size_t ri, std::size_t si,
                    float* __restrict xc) {
  const Range rows = kr.rows[ri], cols = kr.cols[si];
  const std::size_t count = cols.hi - cols.lo;
  if (count == 0 || rows.hi == rows.lo) return;
  if (g.stride == 1 && g.wo == g.w) {
    // As in im2col_row: the valid entries, row after row, go to one contiguous run of dx. The
    // entries between them (at the row ends, destined for the padding) would land on the
    // neighbouring row, so they are set to +0 first: dx starts at +0, a sum that starts at +0
    // never becomes -0 under round-to-nearest, and adding +0 to anything but -0 changes nothing.
    // One long add replaces many short ones.
    zero_row_ends(d, rows, cols, g.wo);
    const std::size_t first = rows.lo * g.wo + cols.lo, last = (rows.hi - 1) * g.wo + cols.hi;
    float* __restrict dst = xc + (rows.lo + ri - g.pad) * g.w + (cols.lo + si - g.pad);
    const float* __restrict src = d + first;
    for (std::size_t j = 0; j < last - first; ++j) dst[j] += src[j];
    return;
  }
  for (std::size_t oi = rows.lo; oi < rows.hi; ++oi) {
    float* __restrict xr = xc + (oi * g.stride + ri - g.pad) * g.w + (cols.lo * g.stride + si - g.pad);
    const float* __restrict dr = d + oi * g.wo + cols.lo;
    if (g.stride == 1) {
      for (std::size_t j = 0; j < count; ++j) xr[j] += dr[j];
    } else {
      for (std::size_t j = 0; j < count; ++j) xr[j * g.stride] += dr[j];
    }
  }
}

// One row (kernel offset ri, si) of the tap matrix for one sample's channel plane dyk of dy:
// h*w values, out[hi*w + wi] = dyk[oi*wo + oj] where hi = oi*stride - pad + ri and
// wi = oj*stride - pad + si, +0 wherever no (oi, oj) lands. The outputs whose tap lies inside
// the input are exactly those of im2col_row's ranges; this is their scatter instead of a gather.
void taps_row(const ConvGeometry& g, const float* dyk, const KernelRanges& kr, std::size_t ri, std::size_t si,
              float* out) {
  const Range rows = kr.rows[ri], cols = kr.cols[si];
  const std::size_t count = cols.hi - cols.lo;
  if (g.stride != 1 || count == 0 || rows.hi == rows.lo) {
    std::fill(out, out + g.h * g.w, 0.0f);
    if (count == 0) return;
    for (std::size_t oi = rows.lo; oi < rows.hi; ++oi) {
      float* o = out + (oi * g.stride + ri - g.pad) * g.w + (cols.lo * g.stride + si - g.pad);
      const float* d = dyk + oi * g.wo + cols.lo;
      for (std::size_t j = 0; j < count; ++j) o[j * g.stride] = d[j];
    }
    return;
  }
  // Stride 1: input rows [h0, h1) and columns [w0, w0 + count) receive dy, the rest is +0.
  const std::size_t h0 = rows.lo + ri - g.pad, h1 = rows.hi + ri - g.pad, w0 = cols.lo + si - g.pad;
  std::fill(out, out + h0 * g.w, 0.0f);
  std::fill(out + h1 * g.w, out + g.h * g.w, 0.0f);
  for (std::size_t hi = h0; hi < h1; ++hi) {
    float* o = out + hi * g.w;
    const float* d = dyk + (hi + g.pad - ri) * g.wo + cols.lo;
    for (std::size_t j = 0; j < w0; ++j) o[j] = 0.0f;
    for (std::size_t j = 0; j < count; ++j) o[w0 + j] = d[j];
    for (std::size_t j = w0 + count; j < g.w; ++j) o[j] = 0.0f;
  }
}

struct ScratchBuffer {
  std::unique_ptr<float[]> data;
  std::size_t size = 0;
};

constexpr std::size_t kScratchSlots = static_cast<std::size_t>(Scratch::partials) + 1;  // the last slot
thread_local std::array<ScratchBuffer, kScratchSlots> t_scratch;

}  // namespace

void check_parameter(const Parameter& p, const Shape& expected, const std::string& layer) {
  if (p.value.shape() != expected || p.grad.shape() != expected) {
    throw std::logic_error("layer " + layer + ": parameter " + p.name + " has shape " + to_string(p.value.shape()) +
                           " (gradient " + to_string(p.grad.shape()) + "), expected " + to_string(expected));
  }
}

int loop_threads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

float* scratch(Scratch slot, std::size_t count) {
  ScratchBuffer& b = t_scratch[static_cast<std::size_t>(slot)];
  if (b.size < count || !b.data) {
    b.data.reset();  // the old buffer goes before the new one comes: a lower peak
    b.data = std::make_unique_for_overwrite<float[]>(std::max<std::size_t>(count, 1));
    b.size = count;
  }
  return b.data.get();
}

void copy_tensor(Tensor& dst, const Tensor& src, int threads) {
  if (dst.shape() != src.shape()) dst = Tensor(src.shape());
  constexpr std::size_t kChunk = std::size_t{1} << 16;
  const std::size_t n = src.size();
  const auto chunks = static_cast<std::int64_t>((n + kChunk - 1) / kChunk);
  const float* s = src.data();
  float* d = dst.data();
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads)) if (chunks > 1)
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::size_t first = static_cast<std::size_t>(c) * kChunk;
    std::memcpy(d + first, s + first, std::min(kChunk, n - first) * sizeof(float));
  }
}

void im2col(const ConvGeometry& g, const float* x, float* cols, int threads) {
  const KernelRanges kr(g);
  const std::size_t L = g.out_pixels(), width = g.n * L, rr = g.r * g.r;
  // One task per (matrix row, sample): a contiguous run of ho*wo outputs.
  const auto tasks = static_cast<std::int64_t>(g.crr() * g.n);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto row = static_cast<std::size_t>(t) / g.n, ni = static_cast<std::size_t>(t) % g.n;
    const std::size_t ci = row / rr, ri = (row / g.r) % g.r, si = row % g.r;
    im2col_row(g, x + (ni * g.c + ci) * g.in_pixels(), kr, ri, si, cols + row * width + ni * L);
  }
}

void im2col_samples(const ConvGeometry& g, const float* x, std::size_t n0, std::size_t nb, float* cols,
                    std::size_t ld) {
  const KernelRanges kr(g);
  const std::size_t L = g.out_pixels();
  for (std::size_t ci = 0; ci < g.c; ++ci) {
    for (std::size_t ri = 0; ri < g.r; ++ri) {
      for (std::size_t si = 0; si < g.r; ++si) {
        float* row = cols + ((ci * g.r + ri) * g.r + si) * ld;
        for (std::size_t b = 0; b < nb; ++b) {
          im2col_row(g, x + ((n0 + b) * g.c + ci) * g.in_pixels(), kr, ri, si, row + b * L);
        }
      }
    }
  }
}

void col2im_add_samples(const ConvGeometry& g, float* dcols, std::size_t ld, std::size_t n0, std::size_t nb,
                        float* dx) {
  const KernelRanges kr(g);
  const std::size_t L = g.out_pixels();
  for (std::size_t b = 0; b < nb; ++b) {
    for (std::size_t ci = 0; ci < g.c; ++ci) {
      float* xc = dx + ((n0 + b) * g.c + ci) * g.in_pixels();
      for (std::size_t ri = 0; ri < g.r; ++ri) {
        for (std::size_t si = 0; si < g.r; ++si) {
          col2im_row_add(g, dcols + ((ci * g.r + ri) * g.r + si) * ld + b * L, kr, ri, si, xc);
        }
      }
    }
  }
}

MPSIM_VECTOR_CLONES
void pad_sample(const ConvGeometry& g, const float* x, std::size_t ni, float* planes, bool borders) {
  const PaddedPlanes pp(g);
  if (borders) std::fill(planes, planes + g.c * pp.size, 0.0f);
  for (std::size_t ci = 0; ci < g.c; ++ci) {
    const float* src = x + (ni * g.c + ci) * g.in_pixels();
    float* d = planes + ci * pp.size + g.pad * pp.wp + g.pad;
    // Row by row in a loop: rows are short, a library call each would cost more than the copy.
    for (std::size_t h = 0; h < g.h; ++h)
      for (std::size_t j = 0; j < g.w; ++j) d[h * pp.wp + j] = src[h * g.w + j];
  }
}

void pad_samples(const ConvGeometry& g, const float* x, float* planes, int threads) {
  const PaddedPlanes pp(g);
  const auto samples = static_cast<std::int64_t>(g.n);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t ni = 0; ni < samples; ++ni) {
    const auto n = static_cast<std::size_t>(ni);
    pad_sample(g, x, n, planes + n * g.c * pp.size, true);
  }
}

void unpad_samples(const ConvGeometry& g, const float* planes, float* x, int threads) {
  const PaddedPlanes pp(g);
  const auto tasks = static_cast<std::int64_t>(g.n * g.c);  // one channel plane each
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto plane = static_cast<std::size_t>(t);
    const float* src = planes + plane * pp.size + g.pad * pp.wp + g.pad;
    float* dst = x + plane * g.in_pixels();
    for (std::size_t h = 0; h < g.h; ++h) std::memcpy(dst + h * g.w, src + h * pp.wp, g.w * sizeof(float));
  }
}

void gather_taps(const ConvGeometry& g, const float* dy, float* taps, int threads) {
  const KernelRanges kr(g);
  const std::size_t P = g.in_pixels(), width = g.n * P, rr = g.r * g.r;
  const auto tasks = static_cast<std::int64_t>(g.krr() * g.n);
#pragma omp parallel for schedule(static) num_threads(loop_threads(threads))
  for (std::int64_t t = 0; t < tasks; ++t) {
    const auto row = static_cast<std::size_t>(t) / g.n, ni = static_cast<std::size_t>(t) % g.n;
    const std::size_t ki = row / rr, ri = (row / g.r) % g.r, si = row % g.r;
    taps_row(g, dy + (ni * g.k + ki) * g.out_pixels(), kr, ri, si, taps + row * width + ni * P);
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
