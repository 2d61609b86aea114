// Rearrangements of convolution tensors into GEMM operands (internal to src/nn/conv2d.cpp),
// and a parameter check shared with src/nn/linear.cpp.
// They only copy values (or write exact zeros), so they cannot change a result's bits; each
// is parallelized over independent output rows, so the thread count changes nothing.
#pragma once

#include <cstddef>
#include <string>

#include "mpsim/tensor.h"

namespace mpsim::detail {

// The sizes of one convolution: input [n, c, h, w], weight [k, c, r, r], output [n, k, ho, wo].
struct ConvGeometry {
  std::size_t n = 0, c = 0, h = 0, w = 0;  // input
  std::size_t k = 0, r = 0;                // output channels, square kernel size
  std::size_t stride = 1, pad = 0;
  std::size_t ho = 0, wo = 0;              // output spatial size

  std::size_t in_pixels() const { return h * w; }     // per sample and channel
  std::size_t out_pixels() const { return ho * wo; }  // per sample and channel
  std::size_t crr() const { return c * r * r; }        // FWD reduction length
  std::size_t krr() const { return k * r * r; }        // BWD reduction length
};

// The batch im2col: cols is (c*r*r) x (n*ho*wo), row (ci*r + ri)*r + si, column
// (ni*ho + oi)*wo + oj, holding x[ni, ci, oi*stride - pad + ri, oj*stride - pad + si], or +0
// where that position lies in the padding.
void im2col(const ConvGeometry& g, const float* x, float* cols, int threads);

// The gather of the data gradient: taps is (k*r*r) x (n*h*w), row (ki*r + ri)*r + si, column
// (ni*h + hi)*w + wi, holding dy[ni, ki, oi, oj] where hi = oi*stride - pad + ri and
// wi = oj*stride - pad + si for integer oi < ho, oj < wo, and +0 for every other tap (into the
// padding or a stride gap). Row by row it is dx's reduction (k, r, s) of a true convolution.
void gather_taps(const ConvGeometry& g, const float* dy, float* taps, int threads);

// NCHW tensor [n, ch, pix] from a channel-major matrix [ch, n*pix] (row stride n*pix).
void channel_major_to_nchw(std::size_t n, std::size_t ch, std::size_t pix, const float* src, float* dst, int threads);
// NCHW tensor [n, ch, pix] from a pixel-major matrix [n*pix, ch] (row stride ch).
void pixel_major_to_nchw(std::size_t n, std::size_t ch, std::size_t pix, const float* src, float* dst, int threads);
// Channel-major matrix [ch, n*pix] from an NCHW tensor [n, ch, pix].
void nchw_to_channel_major(std::size_t n, std::size_t ch, std::size_t pix, const float* src, float* dst, int threads);

// Throws std::logic_error unless p's value and gradient have the shape `expected`. Parameters
// may be replaced wholesale (checkpoint loading); a wrong shape would make a GEMM read out of
// bounds, so layers check before every use.
void check_parameter(const Parameter& p, const Shape& expected, const std::string& layer);

// The thread count an OpenMP loop uses for a StepContext's `threads` (0: OpenMP's default).
int loop_threads(int threads);

}  // namespace mpsim::detail
