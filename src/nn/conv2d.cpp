// The 2-D convolution (docs/nn.md). Emulated precisions (a MAC spec for the GEMM) run every
// reduction as one GEMM over the whole batch through detail::layer_gemm:
//   FWD  y  = W * im2col(x)               reduction over (c, r, s), the bias as start value;
//   BWD  dx = W' * taps(dy)               reduction over (k, r, s): a true convolution, the
//                                         zero taps (padding, stride gaps) included;
//   GRAD dW = dy * im2col(x)^T            reduction over (n, ho, wo);
//   db   = dy * 1                          reduction over (n, ho, wo), through the GRAD MAC;
// so no partial sum is ever added in FP32 outside the MAC model (DESIGN.md principle 2).
//
// Plain FP32 (spec nullopt: the fast OpenBLAS baseline) owes nothing to a MAC model, so each of
// its GEMMs takes the usual fast route instead, as PyTorch's CPU convolution does: fixed blocks
// of consecutive samples (about kBlockPixels output pixels each), handed out to the threads one
// at a time, each block a few single-threaded sgemm calls on operands that fit a core's L2:
//   FWD  stride 1 on maps wide enough: the shifted route (forward_shifted), r*r GEMMs on a
//        zero-padded copy of the sample, no im2col; otherwise y_b = W * im2col(x_b), written
//        straight into y when a block is one sample;
//   BWD  "same" stride-1 convolutions with many input channels: the forward convolution of dy
//        (padded by r-1-pad) with the flipped kernel W~ (input and output channels swapped),
//        by either FWD route, written straight into dx; otherwise dx_b = col2im(W^T * dy_b), a
//        GEMM over k, then FP32 sums of the overlapping entries;
//   GRAD per block dW = sum over (ri, si) of dy_pad * shift(x)^T on the shifted route, else
//        dW^T = im2col(x_b) * dy_b^T; the blocks' partial sums are then added in block order;
//        db likewise from per-row float sums of dy.
// Its rounding order is OpenBLAS's (single-threaded kernels), col2im's and the block order: the
// convolution's FP32 results do not depend on the thread count (the FP32 mode as a whole promises
// reproducibility for a fixed thread count only: Linear's OpenBLAS calls are multi-threaded).
// They are never bit-compared with an emulated mode.
//
// Operand roles of the emulated GEMMs match Linear: the activation or gradient is the MAC's
// operand a, the weight operand b (FWD, BWD); GRAD and the bias gradient have dy as a. The MAC
// engine spreads its work over column panels, so FWD and BWD are fastest with the long pixel
// dimension as the GEMM's n, which puts the weight in A. When a= and b= are the same format the
// two inputs are interchangeable -- a*b and b*a are the same exact product, and both are
// quantized alike -- and that layout is used; otherwise the data stays operand a and the
// pixels become the rows. The two layouts give the same values except for the random bits of
// stochastic roundings, which follow the output index of the GEMM (i*n + j): each layout is
// deterministic on its own.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/layers.h"
#include "src/nn/im2col.h"
#include "src/nn/layer_gemm.h"

namespace mpsim {

namespace {

// The same element formats and, for block specs, the same block formats (the element formats
// alone do not tell hbfp8/64 from hbfp8/64:rule=ceil).
bool inputs_interchangeable(const std::optional<MacSpec>& spec) {
  return !spec || (spec->a == spec->b && (!spec->block || spec->block->a == spec->block->b));
}

}  // namespace

Conv2d::Conv2d(std::string name, std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
               std::size_t stride, std::size_t padding, bool with_bias)
    : Layer(std::move(name)), in_(in_channels), out_(out_channels), kernel_(kernel), stride_(stride), padding_(padding) {
  if (in_channels == 0 || out_channels == 0 || kernel == 0 || stride == 0) {
    throw std::invalid_argument("Conv2d " + this->name() + ": channels, kernel and stride must be positive (got " +
                                std::to_string(in_channels) + ", " + std::to_string(out_channels) + ", " +
                                std::to_string(kernel) + ", " + std::to_string(stride) + ")");
  }
  // Zeros: the model initializes parameters (it owns the random keys).
  const Shape ws{out_channels, in_channels, kernel, kernel};
  weight = Parameter{this->name() + ".weight", Tensor(ws), Tensor(ws)};
  if (with_bias) bias = Parameter{this->name() + ".bias", Tensor({out_channels}), Tensor({out_channels})};
}

Shape Conv2d::output_shape(const Shape& in) const {
  const std::string expect = "[N, " + std::to_string(in_) + ", H, W] with H, W + 2*" + std::to_string(padding_) +
                             " >= " + std::to_string(kernel_);
  if (in.size() != 4 || in[1] != in_ || in[2] + 2 * padding_ < kernel_ || in[3] + 2 * padding_ < kernel_) {
    throw std::invalid_argument("Conv2d " + name() + " expects input " + expect + ", got " + to_string(in));
  }
  return {in[0], out_, (in[2] + 2 * padding_ - kernel_) / stride_ + 1, (in[3] + 2 * padding_ - kernel_) / stride_ + 1};
}

namespace {

detail::ConvGeometry geometry(const Shape& in, const Shape& out, std::size_t kernel, std::size_t stride,
                              std::size_t pad) {
  detail::ConvGeometry g;
  g.n = in[0], g.c = in[1], g.h = in[2], g.w = in[3];
  g.k = out[1], g.r = kernel, g.stride = stride, g.pad = pad;
  g.ho = out[2], g.wo = out[3];
  return g;
}

// Plain-FP32 sample blocks: about this many output pixels per block GEMM (n of FWD and BWD, k
// of GRAD), so that small feature maps still give GEMMs long enough to run at full speed while
// a block's im2col columns (c*r*r rows) stay within a core's L2 cache.
constexpr std::size_t kBlockPixels = 512;

// OpenBLAS (0.3.21, SkylakeX kernels) multiplies GEMMs of at most 10^6 multiply-adds with
// kernels that skip packing the operands; measured here, a forward GEMM of 16 x 784 x 144 runs
// about 1.6 times faster as two column panels of 392, 32 x 392 x 288 slightly faster as four,
// while 64 x 490 x 576 loses when cut into 20. So a GEMM is cut into panels below the limit
// only when it takes at most kMaxPanels of them.
constexpr std::size_t kSmallGemm = 1000000;
constexpr std::size_t kMaxPanels = 4;

std::size_t block_samples(const detail::ConvGeometry& g) {
  const std::size_t L = std::max<std::size_t>(g.out_pixels(), 1);
  return std::clamp<std::size_t>(kBlockPixels / L, 1, g.n);
}

// The fixed blocks of consecutive samples of a plain-FP32 loop: block b holds samples
// [b*size, min((b+1)*size, n)). They depend on the geometry alone, and each block's result on
// its samples alone, whichever thread computes it; threads take blocks dynamically, so a thread
// that the OS holds up (other processes, fewer cores than threads) delays the others by one
// block at most.
struct SampleBlocks {
  std::size_t n, size, count;
  explicit SampleBlocks(const detail::ConvGeometry& g)
      : n(g.n), size(block_samples(g)), count(g.n == 0 ? 0 : (g.n + size - 1) / size) {}
  std::size_t first(std::size_t b) const { return b * size; }
  std::size_t samples(std::size_t b) const { return std::min(size, n - b * size); }
};

// The team of a plain-FP32 loop over `tasks` tasks: no more threads than tasks (but one for none).
int task_team(std::size_t tasks, int threads) {
  const auto t = static_cast<std::size_t>(std::max(detail::loop_threads(threads), 1));
  return static_cast<int>(std::clamp<std::size_t>(tasks, 1, t));
}

// The working buffers of a plain-FP32 loop, a pair per thread of the team, in the scratch slot
// `blocks`: `primary` floats (a block's im2col columns, a sample's padded planes) followed by
// `secondary` ones (a block of dy or of the result, padded output rows).
struct ThreadBuffers {
  std::size_t primary_floats, per_thread;
  float* base;
  ThreadBuffers(std::size_t primary, std::size_t secondary, int team)
      : primary_floats(primary),
        per_thread(primary + secondary),
        base(detail::scratch(detail::Scratch::blocks, static_cast<std::size_t>(team) * per_thread)) {}
  // The calling thread's pair (inside the parallel region).
  float* primary() const { return base + static_cast<std::size_t>(omp_get_thread_num()) * per_thread; }
  float* secondary() const { return primary() + primary_floats; }
};

// A sample-block loop's buffers: a block's columns [crr, B*L] and, for blocks of several
// samples, a channel-major [k, B*L] block.
ThreadBuffers block_buffers(const detail::ConvGeometry& g, std::size_t B, int team) {
  const std::size_t width = B * g.out_pixels();
  return ThreadBuffers(g.crr() * width, B > 1 ? g.k * width : 0, team);
}

// dy of samples [n0, n0 + nb) as a channel-major block [k, nb*L] (row stride nb*L); a single
// sample's [k, L] block is dy itself.
const float* dy_block(const detail::ConvGeometry& g, const float* dy, std::size_t n0, std::size_t nb, float* buf) {
  const std::size_t L = g.out_pixels();
  if (nb == 1) return dy + n0 * g.k * L;
  for (std::size_t b = 0; b < nb; ++b)
    for (std::size_t k = 0; k < g.k; ++k)
      std::memcpy(buf + k * nb * L + b * L, dy + ((n0 + b) * g.k + k) * L, L * sizeof(float));
  return buf;
}

// sums[k] (+)= the float sum of row k of a [rows, width] matrix, each in a fixed order: eight
// interleaved lanes (element i into lane i mod 8, which keeps them in one vector register), then
// the lanes pairwise.
MPSIM_VECTOR_CLONES
void add_row_sums(const float* m, std::size_t rows, std::size_t width, float* sums, bool first) {
  for (std::size_t k = 0; k < rows; ++k) {
    const float* p = m + k * width;
    float lane[8] = {};
    std::size_t i = 0;
    for (; i + 8 <= width; i += 8)
      for (std::size_t j = 0; j < 8; ++j) lane[j] += p[i + j];
    for (std::size_t j = 0; i + j < width; ++j) lane[j] += p[i + j];
    const float s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    sums[k] = first ? s : sums[k] + s;
  }
}

// acc[i] += p[i]
MPSIM_VECTOR_CLONES
void add_into(float* acc, const float* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) acc[i] += p[i];
}

// rows rows of `width` = min(from, to) values from rows `from` apart to rows `to` apart, plus
// bias[row / per_bias] when bias is given (rows are short: a loop, not a call per row).
MPSIM_VECTOR_CLONES
void copy_rows(const float* src, std::size_t from, float* dst, std::size_t to, std::size_t rows, std::size_t per_bias,
               const float* bias) {
  const std::size_t width = std::min(from, to);
  for (std::size_t i = 0; i < rows; ++i) {
    const float* s = src + i * from;
    float* d = dst + i * to;
    if (bias) {
      const float b = bias[i / per_bias];
      for (std::size_t j = 0; j < width; ++j) d[j] = s[j] + b;
    } else {
      for (std::size_t j = 0; j < width; ++j) d[j] = s[j];
    }
  }
}

// The shifted route of stride-1 convolutions on maps wide enough (see forward_shifted): from
// this many input channels on (the GEMMs' reduction length), and while the padded rows it
// computes cost at most this many percent of the valid outputs.
constexpr std::size_t kMinShiftChannels = 8;
constexpr std::size_t kMaxShiftCostPercent = 115;

bool shifted_route(const detail::ConvGeometry& g) {
  return g.stride == 1 && g.c >= kMinShiftChannels && (g.w + 2 * g.pad) * 100 <= kMaxShiftCostPercent * g.wo;
}

// The kernel by offset: k9[(ri*r + si), k, c] = W[k, c, ri, si].
float* kernel_by_offset(const detail::ConvGeometry& g, const float* w) {
  const std::size_t rr = g.r * g.r;
  float* k9 = detail::scratch(detail::Scratch::kernel, rr * g.k * g.c);
  for (std::size_t k = 0; k < g.k; ++k)
    for (std::size_t c = 0; c < g.c; ++c)
      for (std::size_t q = 0; q < rr; ++q) k9[(q * g.k + k) * g.c + c] = w[(k * g.c + c) * rr + q];
  return k9;
}

// The shifted route (stride 1, one sample per task): in the zero-padded layout (PaddedPlanes)
// the input window of kernel offset (ri, si) for all outputs of a padded row is the plane
// shifted by ri*wp + si, a plain matrix [c, ho*wp] with row stride `size`. So
// y_pad [k, ho*wp] = sum over (ri, si) of W(ri, si) [k, c] * shifted planes, r*r GEMMs of length
// c accumulated in FP32, small enough for OpenBLAS's unpacked kernels, with no im2col at all;
// the wp - wo outputs at the end of each padded row read across the row's end and are dropped.
// With `save` given, the padded planes of sample n are built at save + n*c*size and kept there
// (for the weight gradient), their zero borders written only when `borders` says so; otherwise
// they are built in a buffer of the thread.
void forward_shifted(const detail::ConvGeometry& g, const float* x, const float* w, const float* bias, float* y,
                     float* save, bool borders, int threads) {
  const detail::PaddedPlanes pp(g);
  const std::size_t L = g.out_pixels(), n2 = g.ho * pp.wp, planes = g.c * pp.size;
  const float* k9 = kernel_by_offset(g, w);
  const int team = task_team(g.n, threads);
  const detail::SerialBlas serial(team);
  const ThreadBuffers bufs(save ? 0 : planes, g.k * n2, team);  // padded planes, padded output rows
  const auto count = static_cast<std::int64_t>(g.n);
#pragma omp parallel num_threads(team)
  {
    float* yp = bufs.secondary();
    bool fresh = true;  // the thread's padded planes still need their zero borders
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t ni = 0; ni < count; ++ni) {
      const auto n = static_cast<std::size_t>(ni);
      float* xp = save ? save + n * planes : bufs.primary();
      detail::pad_sample(g, x, n, xp, save ? borders : fresh);
      fresh = false;
      for (std::size_t ri = 0, q = 0; ri < g.r; ++ri) {
        for (std::size_t si = 0; si < g.r; ++si, ++q) {
          detail::fp32_gemm_serial(GemmOp::nn, g.k, n2, g.c, k9 + q * g.k * g.c, g.c, xp + ri * pp.wp + si, pp.size,
                                   q == 0 ? 0.0f : 1.0f, yp, n2);
        }
      }
      copy_rows(yp, pp.wp, y + n * g.k * L, g.wo, g.k * g.ho, g.ho, bias);
    }
  }
}

// y = conv(x) (+ bias); when `save` is given, the input that backward keeps is also written
// there in the same loop: on the shifted route its padded planes (see forward_shifted for
// `borders`), otherwise a copy of x.
void forward_fp32(const detail::ConvGeometry& g, const float* x, const float* w, const float* bias, float* y,
                  float* save, bool borders, int threads) {
  if (shifted_route(g)) {
    forward_shifted(g, x, w, bias, y, save, borders, threads);
    return;
  }
  const std::size_t L = g.out_pixels(), crr = g.crr(), sample = g.c * g.in_pixels();
  const SampleBlocks blocks(g);
  const std::size_t B = blocks.size;
  const int team = task_team(blocks.count, threads);
  const detail::SerialBlas serial(team);
  const ThreadBuffers bufs = block_buffers(g, B, team);  // columns, channel-major result
  // A GEMM a few times larger than OpenBLAS's small-matrix limit runs faster as that many column
  // panels, each below the limit (no operand packing); far larger ones do not.
  const auto panel_width = [&](std::size_t width) {
    const std::size_t panels = (g.k * width * crr + kSmallGemm - 1) / kSmallGemm;
    return panels <= kMaxPanels ? (width + panels - 1) / panels : width;
  };
  const auto count = static_cast<std::int64_t>(blocks.count);
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
  for (std::int64_t bi = 0; bi < count; ++bi) {
    const auto b = static_cast<std::size_t>(bi);
    float* cols = bufs.primary();
    float* res = bufs.secondary();
    const std::size_t n0 = blocks.first(b), nb = blocks.samples(b), width = nb * L;
    if (save) std::memcpy(save + n0 * sample, x + n0 * sample, nb * sample * sizeof(float));
    detail::im2col_samples(g, x, n0, nb, cols, width);
    float* out = nb == 1 ? y + n0 * g.k * L : res;
    if (bias) {
      for (std::size_t k = 0; k < g.k; ++k) std::fill(out + k * width, out + (k + 1) * width, bias[k]);
    }
    const std::size_t step = panel_width(width);
    for (std::size_t j = 0; j < width; j += step) {
      const std::size_t cn = std::min(step, width - j);
      detail::fp32_gemm_serial(GemmOp::nn, g.k, cn, crr, w, crr, cols + j, width, bias ? 1.0f : 0.0f, out + j, width);
    }
    if (nb > 1) {
      for (std::size_t s = 0; s < nb; ++s)
        for (std::size_t k = 0; k < g.k; ++k)
          std::memcpy(y + ((n0 + s) * g.k + k) * L, res + k * width + s * L, L * sizeof(float));
    }
  }
}

// The stride-1 data gradient goes through the transposed forward convolution from this many
// input channels on (below, the col2im route's GEMM with c*r*r rows is the faster one).
constexpr std::size_t kMinTransposedChannels = 16;

// dx (its values unspecified on entry) = the data gradient of dy: the transposed convolution
// where it pays, otherwise col2im(W^T dy) block by block.
void data_gradient_fp32(const detail::ConvGeometry& g, const float* dy, const float* w, float* dx, int threads) {
  if (g.stride == 1 && g.pad < g.r && g.in_pixels() <= g.out_pixels() && g.c >= kMinTransposedChannels) {
    // With stride 1 dx is itself a forward convolution: of dy, zero-padded by r - 1 - pad, with
    // the flipped kernel whose input and output channels trade places. That route writes dx
    // straight from the GEMM, with no col2im sums. It multiplies as often as the col2im route
    // when dy is no smaller than dx (padding >= (r-1)/2, "same" convolutions) and more otherwise
    // (its taps then reach far into the padding); and its GEMM has the input channels as rows,
    // too few of them for a fast GEMM in a network's first layers.
    detail::ConvGeometry t;
    t.n = g.n, t.c = g.k, t.h = g.ho, t.w = g.wo;
    t.k = g.c, t.r = g.r, t.stride = 1, t.pad = g.r - 1 - g.pad;
    t.ho = g.h, t.wo = g.w;
    const std::size_t r = g.r, krr = g.krr();
    float* wt = detail::scratch(detail::Scratch::weights, g.c * krr);
    for (std::size_t c = 0; c < g.c; ++c)
      for (std::size_t k = 0; k < g.k; ++k)
        for (std::size_t ri = 0; ri < r; ++ri)
          for (std::size_t si = 0; si < r; ++si)
            wt[c * krr + (k * r + ri) * r + si] = w[((k * g.c + c) * r + (r - 1 - ri)) * r + (r - 1 - si)];
    forward_fp32(t, dy, wt, nullptr, dx, nullptr, false, threads);
    return;
  }
  const std::size_t L = g.out_pixels(), crr = g.crr(), sample = g.c * g.in_pixels();
  const SampleBlocks blocks(g);
  const std::size_t B = blocks.size;
  const int team = task_team(blocks.count, threads);
  const detail::SerialBlas serial(team);
  const ThreadBuffers bufs = block_buffers(g, B, team);  // column gradients, channel-major dy
  const auto count = static_cast<std::int64_t>(blocks.count);
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
  for (std::int64_t bi = 0; bi < count; ++bi) {
    const auto b = static_cast<std::size_t>(bi);
    float* dcols = bufs.primary();
    float* buf = bufs.secondary();
    const std::size_t n0 = blocks.first(b), nb = blocks.samples(b), width = nb * L;
    // dcols [crr, nb*L] = W^T [crr, k] * dy_b [k, nb*L] (tn: W [k, crr] as stored).
    detail::fp32_gemm_serial(GemmOp::tn, crr, width, g.k, w, crr, dy_block(g, dy, n0, nb, buf), width, 0.0f, dcols,
                             width);
    // col2im adds into +0 (the block's samples of dx are zeroed here, while they are in cache).
    float* dxb = dx + n0 * sample;
    std::fill(dxb, dxb + nb * sample, 0.0f);
    detail::col2im_add_samples(g, dcols, width, n0, nb, dx);
  }
}

// Inside a parallel region (an orphaned work-sharing loop): adds the partial sums of groups
// 1, 2, ... (each `size` floats, consecutive) into group 0's, in group order, element ranges
// split over the team, so each element's sum has the same order for any thread count.
void sum_groups_in_order(float* partials, std::size_t groups, std::size_t size) {
  constexpr std::size_t kChunk = 4096;
  const auto chunks = static_cast<std::int64_t>((size + kChunk - 1) / kChunk);
#pragma omp for schedule(static)
  for (std::int64_t ci = 0; ci < chunks; ++ci) {
    const std::size_t i0 = static_cast<std::size_t>(ci) * kChunk, i1 = std::min(size, i0 + kChunk);
    for (std::size_t grp = 1; grp < groups; ++grp) add_into(partials + i0, partials + grp * size + i0, i1 - i0);
  }
}

// At most this many floats of partial weight gradients (32 MiB): beyond, consecutive sample
// blocks share a partial sum.
constexpr std::size_t kPartialBudget = std::size_t{8} << 20;

// The shifted route of the weight gradient (stride 1; see forward_shifted): per sample,
// dW(ri, si) [k, c] (+)= dy_pad [k, ho*wp] * (the planes shifted by ri*wp + si)^T, where dy_pad
// is dy laid out in padded rows with zeros in the wp - wo columns past each row's outputs, so the
// window entries that forward_shifted drops are multiplied by zero. (A zero times an infinite
// or NaN activation is NaN, so such an activation spreads NaN over its channel's whole kernel
// gradient, where the exact gradient is infinite or NaN in most of it anyway; a finite
// activation adds an exact zero.) Samples fall into fixed groups as in weight_gradient_fp32.
// xpad holds the padded planes of every sample, as forward_shifted keeps them.
void weight_gradient_shifted(const detail::ConvGeometry& g, const float* xpad, const float* dy, float* dw, float* db,
                             int threads) {
  const detail::PaddedPlanes pp(g);
  const std::size_t L = g.out_pixels(), n2 = g.ho * pp.wp, rr = g.r * g.r, kc = g.k * g.c;
  const std::size_t wsize = rr * kc, psize = wsize + g.k;
  const std::size_t groups = std::clamp<std::size_t>(kPartialBudget / psize, 1, std::max<std::size_t>(g.n, 1));
  const int team = task_team(groups, threads);
  const detail::SerialBlas serial(team);
  const ThreadBuffers bufs(0, g.k * n2, team);  // dy in padded rows
  float* partials = detail::scratch(detail::Scratch::partials, groups * psize);
  const auto group_count = static_cast<std::int64_t>(groups), rows = static_cast<std::int64_t>(g.k);
#pragma omp parallel num_threads(team)
  {
    float* dyp = bufs.secondary();
    // dy_pad's columns past the outputs are zeroed once per call and thread; later samples
    // overwrite only the rest.
    bool fresh = true;
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t gi = 0; gi < group_count; ++gi) {
      const auto grp = static_cast<std::size_t>(gi);
      float* pw = partials + grp * psize;  // [r*r, k, c], then db [k]
      float* pb = pw + wsize;
      const std::size_t n0 = g.n * grp / groups, n1 = g.n * (grp + 1) / groups;
      if (n0 == n1) std::fill(pw, pw + psize, 0.0f);  // no samples (an empty batch)
      for (std::size_t n = n0; n < n1; ++n) {
        const bool first = n == n0;
        const float* dyn = dy + n * g.k * L;
        const float* xp = xpad + n * g.c * pp.size;
        if (fresh) std::fill(dyp, dyp + g.k * n2, 0.0f);
        fresh = false;
        copy_rows(dyn, g.wo, dyp, pp.wp, g.k * g.ho, g.ho, nullptr);
        for (std::size_t ri = 0, q = 0; ri < g.r; ++ri) {
          for (std::size_t si = 0; si < g.r; ++si, ++q) {
            detail::fp32_gemm_serial(GemmOp::nt, g.k, g.c, n2, dyp, n2, xp + ri * pp.wp + si, pp.size,
                                     first ? 0.0f : 1.0f, pw + q * kc, g.c);
          }
        }
        add_row_sums(dyn, g.k, L, pb, first);
      }
    }
    sum_groups_in_order(partials, groups, psize);
    // dw [k, c, r*r] from the sum [r*r, k, c].
#pragma omp for schedule(static)
    for (std::int64_t kk = 0; kk < rows; ++kk) {
      const auto k = static_cast<std::size_t>(kk);
      for (std::size_t c = 0; c < g.c; ++c)
        for (std::size_t q = 0; q < rr; ++q) dw[(k * g.c + c) * rr + q] = partials[q * kc + k * g.c + c];
    }
  }
  if (db) std::memcpy(db, partials + wsize, g.k * sizeof(float));
}

// dw = dy * im2col(x)^T and db[k] = sum of dy's channel k (db may be null), x as the forward
// kept it (padded planes on the shifted route, see forward_fp32). The sample blocks
// fall into fixed groups (one block each unless the budget says otherwise); each group's sums
// are accumulated block after block into its own partial dW^T [crr, k] (the faster GEMM layout:
// the long crr dimension as m) and db [k], and the groups' partials are then added in group
// order. Neither depends on the thread count.
void weight_gradient_fp32(const detail::ConvGeometry& g, const float* x, const float* dy, float* dw, float* db,
                          int threads) {
  if (shifted_route(g)) {
    weight_gradient_shifted(g, x, dy, dw, db, threads);
    return;
  }
  const std::size_t L = g.out_pixels(), crr = g.crr(), wsize = g.k * crr, psize = wsize + g.k;
  const SampleBlocks blocks(g);
  const std::size_t B = blocks.size;
  const std::size_t groups = std::clamp<std::size_t>(kPartialBudget / psize, 1, std::max<std::size_t>(blocks.count, 1));
  const int team = task_team(groups, threads);
  const detail::SerialBlas serial(team);
  const ThreadBuffers bufs = block_buffers(g, B, team);  // columns, channel-major dy
  float* partials = detail::scratch(detail::Scratch::partials, groups * psize);
  const auto group_count = static_cast<std::int64_t>(groups), rows = static_cast<std::int64_t>(g.k);
#pragma omp parallel num_threads(team)
  {
    float* cols = bufs.primary();
    float* buf = bufs.secondary();
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t gi = 0; gi < group_count; ++gi) {
      const auto grp = static_cast<std::size_t>(gi);
      float* pw = partials + grp * psize;
      float* pb = pw + wsize;
      const std::size_t b0 = blocks.count * grp / groups, b1 = blocks.count * (grp + 1) / groups;
      if (b0 == b1) std::fill(pw, pw + psize, 0.0f);  // no samples (an empty batch)
      for (std::size_t b = b0; b < b1; ++b) {
        const bool first = b == b0;
        const std::size_t n0 = blocks.first(b), nb = blocks.samples(b), width = nb * L;
        const float* dyb = dy_block(g, dy, n0, nb, buf);
        detail::im2col_samples(g, x, n0, nb, cols, width);
        // pw [crr, k] (+)= cols [crr, nb*L] * dy_b^T (nt: dy_b [k, nb*L] as stored).
        detail::fp32_gemm_serial(GemmOp::nt, crr, g.k, width, cols, width, dyb, width, first ? 0.0f : 1.0f, pw, g.k);
        add_row_sums(dyb, g.k, width, pb, first);
      }
    }
    sum_groups_in_order(partials, groups, psize);
    // dw [k, crr] = the transpose of the sum [crr, k].
#pragma omp for schedule(static)
    for (std::int64_t kk = 0; kk < rows; ++kk) {
      const auto k = static_cast<std::size_t>(kk);
      for (std::size_t q = 0; q < crr; ++q) dw[k * crr + q] = partials[q * g.k + k];
    }
  }
  if (db) std::memcpy(db, partials + wsize, g.k * sizeof(float));
}

}  // namespace

Tensor Conv2d::forward(const Tensor& x, const StepContext& ctx) {
  Tensor y = Tensor::uninitialized(output_shape(x.shape()));  // every route writes all of y
  const detail::ConvGeometry g = geometry(x.shape(), y.shape(), kernel_, stride_, padding_);
  detail::check_parameter(weight, {out_, in_, kernel_, kernel_}, name());
  if (bias) detail::check_parameter(*bias, {out_}, name());
  const float* b = bias ? bias->value.data() : nullptr;
  // The input, not its im2col (r*r times larger), is what backward keeps; GRAD rebuilds cols. On
  // the shifted route it keeps the padded planes that the plain-FP32 forward builds anyway and
  // its weight gradient reads (whatever the precision, so the layout depends on the shape
  // alone), else x itself; into last step's buffer when that has the shape. A new buffer starts
  // at zero, and a reused one of the same input shape keeps its zero borders.
  const bool padded = shifted_route(g);
  float* save = nullptr;
  bool borders = false;
  if (ctx.training) {
    const Shape saved = padded ? Shape{g.n, g.c, detail::PaddedPlanes(g).size} : x.shape();
    borders = x_.shape() == saved && x_shape_ != x.shape();
    if (x_.shape() != saved) x_ = Tensor(saved);
    x_shape_ = x.shape();
    save = x_.data();
  } else {
    x_ = Tensor();
    x_shape_.clear();
  }
  if (!precision_.fwd) {
    forward_fp32(g, x.data(), weight.value.data(), b, y.data(), save, borders, ctx.threads);  // saves in its loop
  } else {
    const std::size_t crr = g.crr(), L = g.out_pixels(), nl = g.n * L;
    float* cols = detail::scratch(detail::Scratch::columns, crr * nl);
    detail::im2col(g, x.data(), cols, ctx.threads);
    const MacRandom rnd = gemm_random(ctx, id, GemmRole::fwd);
    float* out = detail::scratch(detail::Scratch::out, g.k * nl);
    if (inputs_interchangeable(precision_.fwd)) {
      // [K, N*L] = W [K, crr] * cols [crr, N*L]; W's memory order is already (k, (c, r, s)).
      detail::layer_gemm(precision_.fwd, GemmOp::nn, g.k, nl, crr, weight.value.data(), crr, cols, nl, out, nl, b,
                         detail::BiasAxis::row, rnd, ctx.threads);
      detail::channel_major_to_nchw(g.n, g.k, L, out, y.data(), ctx.threads);
    } else {
      // [N*L, K] = cols^T * W^T (tn: A = cols as stored), with W^T [crr, K] copied.
      float* wt = detail::scratch(detail::Scratch::weights, crr * g.k);
      for (std::size_t k = 0; k < g.k; ++k)
        for (std::size_t q = 0; q < crr; ++q) wt[q * g.k + k] = weight.value[k * crr + q];
      detail::layer_gemm(precision_.fwd, GemmOp::tn, nl, g.k, crr, cols, nl, wt, g.k, out, g.k, b,
                         detail::BiasAxis::col, rnd, ctx.threads);
      detail::pixel_major_to_nchw(g.n, g.k, L, out, y.data(), ctx.threads);
    }
    if (save && padded) {
      detail::pad_samples(g, x.data(), save, ctx.threads);
    } else if (save) {
      detail::copy_tensor(x_, x, ctx.threads);
    }
  }
  return y;
}

Tensor Conv2d::backward(const Tensor& dy, const StepContext& ctx) {
  if (x_shape_.empty()) {
    throw std::logic_error("Conv2d " + name() + ": backward without a training-mode forward");
  }
  const Shape ys = output_shape(x_shape_);
  if (dy.shape() != ys) {
    throw std::invalid_argument("Conv2d " + name() + ": output gradient of shape " + to_string(dy.shape()) +
                                ", expected " + to_string(ys));
  }
  detail::check_parameter(weight, {out_, in_, kernel_, kernel_}, name());
  if (bias) {
    detail::check_parameter(*bias, {out_}, name());
    detail::check_ones_operand(precision_.grad, name());  // before any work
  }
  const detail::ConvGeometry g = geometry(x_shape_, ys, kernel_, stride_, padding_);
  const std::size_t rr = g.r * g.r, krr = g.krr(), crr = g.crr(), P = g.in_pixels(), L = g.out_pixels();
  const std::size_t nhw = g.n * P, nl = g.n * L;
  const float* w = weight.value.data();

  Tensor dx;  // stays empty when the model wants no dL/dx of this layer
  if (input_gradient_) {
    dx = Tensor::uninitialized(x_shape_);  // every route writes all of dx
    if (!precision_.bwd) {
      data_gradient_fp32(g, dy.data(), w, dx.data(), ctx.threads);
    } else {
      // BWD: dx[n, c, h, w] = sum over (k, r, s) of taps[(k, r, s), (n, h, w)] * W[k, c, r, s].
      float* taps = detail::scratch(detail::Scratch::columns, krr * nhw);
      detail::gather_taps(g, dy.data(), taps, ctx.threads);
      const MacRandom rnd = gemm_random(ctx, id, GemmRole::bwd);
      float* wr = detail::scratch(detail::Scratch::weights, g.c * krr);
      float* out = detail::scratch(detail::Scratch::out, g.c * nhw);
      if (inputs_interchangeable(precision_.bwd)) {
        // [C, N*H*W] = W' [C, krr] * taps [krr, N*H*W], W'[c, (k, r, s)] = W[k, c, r, s].
        for (std::size_t k = 0; k < g.k; ++k)
          for (std::size_t c = 0; c < g.c; ++c)
            for (std::size_t q = 0; q < rr; ++q) wr[c * krr + k * rr + q] = w[(k * g.c + c) * rr + q];
        detail::layer_gemm(precision_.bwd, GemmOp::nn, g.c, nhw, krr, wr, krr, taps, nhw, out, nhw, nullptr,
                           detail::BiasAxis::none, rnd, ctx.threads);
        detail::channel_major_to_nchw(g.n, g.c, P, out, dx.data(), ctx.threads);
      } else {
        // [N*H*W, C] = taps^T * W'' (tn: A = taps as stored), W''[(k, r, s), c] = W[k, c, r, s].
        for (std::size_t k = 0; k < g.k; ++k)
          for (std::size_t c = 0; c < g.c; ++c)
            for (std::size_t q = 0; q < rr; ++q) wr[(k * rr + q) * g.c + c] = w[(k * g.c + c) * rr + q];
        detail::layer_gemm(precision_.bwd, GemmOp::tn, nhw, g.c, krr, taps, nhw, wr, g.c, out, g.c, nullptr,
                           detail::BiasAxis::none, rnd, ctx.threads);
        detail::pixel_major_to_nchw(g.n, g.c, P, out, dx.data(), ctx.threads);
      }
    }
  }

  if (!precision_.grad) {
    weight_gradient_fp32(g, x_.data(), dy.data(), weight.grad.data(), bias ? bias->grad.data() : nullptr, ctx.threads);
    return dx;
  }
  // GRAD: dW [K, crr] = dy' [K, N*L] * cols^T (nt, cols [crr, N*L] as stored), reducing over
  // (n, ho, wo) in that order; dy' is dy with its channel dimension first.
  float* dyr = detail::scratch(detail::Scratch::out, g.k * nl);
  detail::nchw_to_channel_major(g.n, g.k, L, dy.data(), dyr, ctx.threads);
  const float* xs = x_.data();
  if (shifted_route(g)) {  // the forward kept padded planes
    float* plain = detail::scratch(detail::Scratch::input, g.n * g.c * P);
    detail::unpad_samples(g, xs, plain, ctx.threads);
    xs = plain;
  }
  float* cols = detail::scratch(detail::Scratch::columns, crr * nl);
  detail::im2col(g, xs, cols, ctx.threads);
  detail::layer_gemm(precision_.grad, GemmOp::nt, g.k, crr, nl, dyr, nl, cols, nl, weight.grad.data(), crr, nullptr,
                     detail::BiasAxis::none, gemm_random(ctx, id, GemmRole::grad), ctx.threads);
  if (bias) {
    // db [K, 1] = dy' [K, N*L] * 1 [N*L, 1], the same reduction order as GRAD.
    detail::bias_gradient(precision_.grad, false, g.k, nl, dyr, nl, bias->grad.data(),
                          gemm_random(ctx, id, GemmRole::bias_grad), ctx.threads);
  }
  return dx;
}

void Conv2d::collect_parameters(std::vector<Parameter*>& out) {
  out.push_back(&weight);
  if (bias) out.push_back(&*bias);
}

void Conv2d::collect_gemms(const Shape& in, std::vector<GemmCount>& out) const {
  const Shape ys = output_shape(in);
  const std::size_t rr = kernel_ * kernel_, nl = in[0] * ys[2] * ys[3], nhw = in[0] * in[2] * in[3];
  // Reported as (rows of data, channels, reduction), like Linear's; the BWD reduction counts
  // every tap, the zero ones included, as the MAC performs them.
  out.push_back({name(), GemmRole::fwd, nl, out_, in_ * rr});
  if (input_gradient_) out.push_back({name(), GemmRole::bwd, nhw, in_, out_ * rr});
  out.push_back({name(), GemmRole::grad, out_, in_ * rr, nl});
  if (bias) out.push_back({name(), GemmRole::bias_grad, out_, 1, nl});
}

}  // namespace mpsim
