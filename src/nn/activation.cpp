// ReLU and Dropout: element-wise FP32 operations with PyTorch's semantics (docs/nn.md). Each
// output element depends on its own input alone, so threads may split the elements freely.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "mpsim/layers.h"
#include "mpsim/quantize_array.h"
#include "src/nn/im2col.h"  // MPSIM_VECTOR_CLONES

namespace mpsim {

namespace {

int team_size(const StepContext& ctx) { return ctx.threads > 0 ? ctx.threads : omp_get_max_threads(); }

std::string describe(const Layer& l) { return std::string(l.type()) + " '" + l.name() + "'"; }

// Below this many elements a thread team costs more than it saves.
constexpr long long kParallelMin = 1 << 15;

void check_gradient_shape(const Layer& l, const Shape& dy, const Shape& expected) {
  if (dy != expected) {
    throw std::invalid_argument(describe(l) + ": gradient of shape " + to_string(dy) + " for an output of shape " +
                                to_string(expected));
  }
}

}  // namespace

namespace {

// Elements per task of the ReLU loops (a task runs one vectorized call).
constexpr std::size_t kChunk = std::size_t{1} << 14;

// out = relu(in); keep (when given) = 1 where the output is the input. NaN propagates, as
// torch.relu does; -0 and negatives become +0. Both operands of the choice are read
// unconditionally, so the compiler makes it a vector blend.
MPSIM_VECTOR_CLONES
void relu_chunk(const float* in, float* out, std::uint8_t* keep, std::size_t n) {
  if (keep) {
    for (std::size_t i = 0; i < n; ++i) {
      const float v = in[i];
      const bool pass = !(v <= 0.0f);  // v > 0 or NaN
      out[i] = pass ? v : 0.0f;
      keep[i] = pass ? 1 : 0;
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const float v = in[i];
      out[i] = v <= 0.0f ? 0.0f : v;
    }
  }
}

// As PyTorch's threshold_backward (output <= 0 ? 0 : dy): no gradient where the output is +0
// (x <= 0); where the output is NaN the gradient passes, as there.
MPSIM_VECTOR_CLONES
void relu_backward_chunk(const std::uint8_t* keep, const float* d, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const float g = d[i];
    out[i] = keep[i] != 0 ? g : 0.0f;
  }
}

}  // namespace

Tensor ReLU::forward(const Tensor& x, const StepContext& ctx) {
  Tensor y = Tensor::uninitialized(x.shape());
  const std::size_t n = x.size();
  saved_ = ctx.training;
  std::uint8_t* keep = nullptr;
  if (ctx.training) {
    shape_ = x.shape();
    keep_.resize(n);
    keep = keep_.data();
  } else {
    keep_.clear();
    shape_.clear();
  }
  const float* in = x.data();
  float* out = y.data();
  const auto chunks = static_cast<long long>((n + kChunk - 1) / kChunk);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static) if (n >= static_cast<std::size_t>(kParallelMin))
  for (long long ch = 0; ch < chunks; ++ch) {
    const std::size_t first = static_cast<std::size_t>(ch) * kChunk, len = std::min(kChunk, n - first);
    relu_chunk(in + first, out + first, keep ? keep + first : nullptr, len);
  }
  return y;
}

Tensor ReLU::backward(const Tensor& dy, const StepContext& ctx) {
  if (!saved_) throw std::logic_error(describe(*this) + ": backward needs a forward in training mode first");
  check_gradient_shape(*this, dy.shape(), shape_);
  Tensor dx = Tensor::uninitialized(dy.shape());
  const std::uint8_t* keep = keep_.data();
  const float* d = dy.data();
  float* out = dx.data();
  const std::size_t n = dy.size();
  const auto chunks = static_cast<long long>((n + kChunk - 1) / kChunk);
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static) if (n >= static_cast<std::size_t>(kParallelMin))
  for (long long ch = 0; ch < chunks; ++ch) {
    const std::size_t first = static_cast<std::size_t>(ch) * kChunk, len = std::min(kChunk, n - first);
    relu_backward_chunk(keep + first, d + first, out + first, len);
  }
  return dx;
}

Dropout::Dropout(std::string name, float p) : Layer(std::move(name)), p_(p), scale_(1.0f) {
  if (!(p >= 0.0f && p < 1.0f)) {
    throw std::invalid_argument(describe(*this) + ": p must lie in [0, 1), got " + std::to_string(p));
  }
  // PyTorch computes 1 / (1 - p) in double and multiplies by it as a float.
  scale_ = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
}

Tensor Dropout::forward(const Tensor& x, const StepContext& ctx) {
  mask_.clear();
  shape_ = x.shape();
  if (!ctx.training || p_ == 0.0f) {
    saved_ = ctx.training ? Saved::identity : Saved::none;
    return x;
  }
  saved_ = Saved::mask;
  // Element i is dropped iff its word 0 is below p * 2^32 (exact in double: p is a float), i.e.
  // iff word < ceil(p * 2^32): probability ceil(p * 2^32) / 2^32, which is p exactly for
  // p >= 2^-8 and p rounded up to a multiple of 2^-32 below that.
  const auto threshold = static_cast<std::uint64_t>(std::ceil(static_cast<double>(p_) * 0x1p32));
  const RandomKey key = layer_random_key(ctx, id);
  const std::size_t n = x.size();
  mask_.resize(n);
  Tensor y(x.shape());
  const float* in = x.data();
  float* out = y.data();
  const float scale = scale_;
  // Chunks of words made by the SIMD Philox; a chunk's words depend only on its indices, so the
  // mask is the same for every thread count and chunk size.
  constexpr std::size_t kChunk = 4096;
  const auto chunks = static_cast<long long>((n + kChunk - 1) / kChunk);
#pragma omp parallel num_threads(team_size(ctx)) if (n >= static_cast<std::size_t>(kParallelMin))
  {
    std::vector<std::uint32_t> words(kChunk);
#pragma omp for schedule(static)
    for (long long ch = 0; ch < chunks; ++ch) {
      const std::size_t first = static_cast<std::size_t>(ch) * kChunk;
      const std::size_t len = std::min(kChunk, n - first);
      random_words(key, first, len, words.data());
      for (std::size_t j = 0; j < len; ++j) {
        const std::size_t i = first + j;
        const bool keep = words[j] >= threshold;
        mask_[i] = keep ? 1 : 0;
        // x * mask * scale, as PyTorch: a dropped NaN or infinity still gives NaN.
        out[i] = (in[i] * (keep ? 1.0f : 0.0f)) * scale;
      }
    }
  }
  return y;
}

Tensor Dropout::backward(const Tensor& dy, const StepContext& ctx) {
  if (saved_ == Saved::none) {
    throw std::logic_error(describe(*this) + ": backward needs a forward in training mode first");
  }
  check_gradient_shape(*this, dy.shape(), shape_);
  if (saved_ == Saved::identity) return dy;
  Tensor dx(dy.shape());
  const float* d = dy.data();
  float* out = dx.data();
  const std::uint8_t* m = mask_.data();
  const float scale = scale_;
  const auto n = static_cast<long long>(dy.size());
#pragma omp parallel for num_threads(team_size(ctx)) schedule(static) if (n >= kParallelMin)
  for (long long i = 0; i < n; ++i) out[i] = (d[i] * static_cast<float>(m[i])) * scale;
  return dx;
}

}  // namespace mpsim
