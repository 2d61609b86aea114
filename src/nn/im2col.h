// Rearrangements of convolution tensors into GEMM operands (internal to src/nn/conv2d.cpp),
// the FP32 col2im sum of the plain-FP32 data gradient, reusable scratch memory, and a
// parameter check shared with src/nn/linear.cpp.
// The rearrangements only copy values (or write exact zeros), so they cannot change a result's
// bits; the batch versions are parallelized over independent output rows, so the thread count
// changes nothing. col2im_add is arithmetic, used only where no MAC model is involved (FP32).
#pragma once

#include <cstddef>
#include <string>

#include "mpsim/tensor.h"

// Hot element-wise loops of the layers are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2)
// and the build's baseline (SSE2), the version picked once at load time (GCC function
// multiversioning). Every version computes the same bits: the loops work element by element or
// sum in an explicit lane order, and neither contraction (-ffp-contract=off) nor reassociation
// (no -ffast-math) is allowed, so the vector width cannot change a rounding. A clone is not
// inlined into its caller, so it goes on functions that do a whole plane or channel per call.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MPSIM_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MPSIM_VECTOR_CLONES
#endif

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

// The same matrix for samples [n0, n0 + nb) only, on the calling thread: cols is
// (c*r*r) x (nb*ho*wo) with row stride ld >= nb*ho*wo, column ((ni - n0)*ho + oi)*wo + oj.
void im2col_samples(const ConvGeometry& g, const float* x, std::size_t n0, std::size_t nb, float* cols,
                    std::size_t ld);

// The inverse rearrangement with sums, on the calling thread: for samples [n0, n0 + nb), adds
// every entry of dcols (laid out as im2col_samples' cols, row stride ld) to the element of dx
// (NCHW, the whole batch, no element -0) it was gathered from; entries that came from the padding
// are dropped (dcols is scratch: they may be overwritten with +0). The adds into one element run
// in row order (ci, ri, si), so the result is fixed. This is the
// FP32 data gradient's second half (a GEMM followed by an FP32 col2im sum), which DESIGN.md
// principle 2 rules out for emulated precisions; only the plain-FP32 mode uses it.
void col2im_add_samples(const ConvGeometry& g, float* dcols, std::size_t ld, std::size_t n0, std::size_t nb,
                        float* dx);

// The zero-padded layout of the plain-FP32 stride-1 convolution's shifted route
// (src/nn/conv2d.cpp): each channel plane of a sample becomes a (h + 2*pad) x (w + 2*pad) plane
// followed by r - 1 zeros, so that the plane shifted by any kernel offset (ri, si), read for
// ho full padded rows, stays inside it.
struct PaddedPlanes {
  std::size_t hp, wp, size;  // rows, row length, floats per channel (hp*wp + r - 1)
  explicit PaddedPlanes(const ConvGeometry& g) : hp(g.h + 2 * g.pad), wp(g.w + 2 * g.pad), size(hp * wp + g.r - 1) {}
};

// The c padded planes (c x size floats) of sample ni of x. With `borders` false only the
// interior is written: the zeros are those of an earlier call on the same buffer.
void pad_sample(const ConvGeometry& g, const float* x, std::size_t ni, float* planes, bool borders);
// The padded planes of every sample, sample after sample (n x c x size floats), borders included.
void pad_samples(const ConvGeometry& g, const float* x, float* planes, int threads);
// x (NCHW) back from the padded planes of every sample.
void unpad_samples(const ConvGeometry& g, const float* planes, float* x, int threads);

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

// Scratch memory of the calling thread: slot `slot` holds at least `count` floats, kept
// (uninitialized) between calls and grown on demand, so that the large temporaries of a layer
// call (im2col columns, GEMM outputs, partial sums) are not allocated, page-faulted and
// zero-filled on every call. The pointer stays valid until the next request for the same slot
// on the same thread; layers run one at a time per thread, and each call uses distinct slots
// for the buffers it holds at once. Worker threads of a parallel loop receive parts of a
// buffer the calling thread requested.
enum class Scratch : unsigned {
  columns,   // a whole-batch im2col or tap matrix (emulated GEMMs)
  out,       // a whole-batch GEMM result or rearranged gradient
  weights,   // a rearranged weight matrix
  kernel,    // the kernel by offset of the plain-FP32 shifted convolution
  input,     // a layer's saved input in its plain layout
  blocks,    // per-thread working buffers of the plain-FP32 convolution
  partials,  // per-block partial weight and bias gradients (plain FP32)
};
float* scratch(Scratch slot, std::size_t count);

// dst = src, reusing dst's buffer when the shapes agree (then no allocation, no zero-fill and no
// page faults), the copy spread over `threads` threads (0: OpenMP's default). For a layer's
// saved input, copied every training step.
void copy_tensor(Tensor& dst, const Tensor& src, int threads);

// Throws std::logic_error unless p's value and gradient have the shape `expected`. Parameters
// may be replaced wholesale (checkpoint loading); a wrong shape would make a GEMM read out of
// bounds, so layers check before every use.
void check_parameter(const Parameter& p, const Shape& expected, const std::string& layer);

// The thread count an OpenMP loop uses for a StepContext's `threads` (0: OpenMP's default).
int loop_threads(int threads);

}  // namespace mpsim::detail
