// What every layer shares: the random keys of its GEMMs and masks, Sequential, the residual add.
#include <algorithm>
#include <stdexcept>

#include "mpsim/layers.h"
#include "src/nn/im2col.h"  // MPSIM_VECTOR_CLONES, loop_threads

namespace mpsim {

namespace {

// SplitMix64's finalizer: a bijective mix, so distinct (seed, step) pairs give distinct keys
// with overwhelming probability and neighbouring steps give unrelated ones.
std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t step_seed(const StepContext& ctx) { return mix64(ctx.seed ^ mix64(ctx.step)); }

MPSIM_VECTOR_CLONES
void add_arrays(const float* a, const float* b, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

}  // namespace

const char* to_string(GemmRole role) {
  switch (role) {
    case GemmRole::fwd: return "fwd";
    case GemmRole::bwd: return "bwd";
    case GemmRole::grad: return "grad";
    case GemmRole::bias_grad: return "bias_grad";
  }
  return "?";
}

MacRandom gemm_random(const StepContext& ctx, std::uint32_t layer_id, GemmRole role) {
  return MacRandom{step_seed(ctx), layer_id * 4u + static_cast<std::uint32_t>(role)};
}

RandomKey layer_random_key(const StepContext& ctx, std::uint32_t layer_id) {
  // A stream of its own, apart from the GEMM ids (those stay below 2^31 for any real model).
  return RandomKey{step_seed(ctx), 0x80000000u | layer_id};
}

Layer& Sequential::add(std::unique_ptr<Layer> layer) {
  children_.push_back(std::move(layer));
  return *children_.back();
}

Shape Sequential::output_shape(const Shape& in) const {
  Shape s = in;
  for (const auto& c : children_) s = c->output_shape(s);
  return s;
}

Tensor Sequential::forward(const Tensor& x, const StepContext& ctx) {
  if (children_.empty()) return x;
  Tensor y = children_.front()->forward(x, ctx);
  for (std::size_t i = 1; i < children_.size(); ++i) y = children_[i]->forward(y, ctx);
  return y;
}

Tensor Sequential::backward(const Tensor& dy, const StepContext& ctx) {
  if (input_gradient_) {
    if (children_.empty()) return dy;
    Tensor d = children_.back()->backward(dy, ctx);
    for (std::size_t i = children_.size() - 1; i-- > 0;) d = children_[i]->backward(d, ctx);
    return d;
  }
  // No dL/dx wanted: the children before the first learning one have nothing to compute.
  const std::size_t first = first_learning_child();
  Tensor d = dy;
  for (std::size_t i = children_.size(); i-- > first;) d = children_[i]->backward(d, ctx);
  return {};
}

std::size_t Sequential::first_learning_child() const {
  for (std::size_t i = 0; i < children_.size(); ++i) {
    std::vector<Parameter*> p;
    children_[i]->collect_parameters(p);
    if (!p.empty()) return i;
  }
  return children_.size();
}

void Sequential::set_input_gradient(bool on) {
  input_gradient_ = on;
  if (const std::size_t first = first_learning_child(); first < children_.size()) children_[first]->set_input_gradient(on);
}

void Sequential::collect_parameters(std::vector<Parameter*>& out) {
  for (const auto& c : children_) c->collect_parameters(out);
}

void Sequential::collect_buffers(std::vector<Buffer*>& out) {
  for (const auto& c : children_) c->collect_buffers(out);
}

void Sequential::collect_layers(std::vector<Layer*>& out) {
  out.push_back(this);
  for (const auto& c : children_) c->collect_layers(out);
}

void Sequential::collect_gemms(const Shape& in, std::vector<GemmCount>& out) const {
  Shape s = in;
  for (const auto& c : children_) {
    c->collect_gemms(s, out);
    s = c->output_shape(s);
  }
}

Tensor residual_add(const Tensor& a, const Tensor& b, int threads) {
  if (a.shape() != b.shape()) {
    throw std::invalid_argument("residual add of shapes " + to_string(a.shape()) + " and " + to_string(b.shape()));
  }
  Tensor y = Tensor::uninitialized(a.shape());
  // Element by element, so any split gives the same bits; a team only for sizes that repay it.
  constexpr std::size_t kChunk = std::size_t{1} << 15;
  const std::size_t n = a.size();
  const auto chunks = static_cast<long long>((n + kChunk - 1) / kChunk);
  const float* pa = a.data();
  const float* pb = b.data();
  float* py = y.data();
#pragma omp parallel for schedule(static) num_threads(detail::loop_threads(threads)) if (chunks > 1)
  for (long long c = 0; c < chunks; ++c) {
    const std::size_t first = static_cast<std::size_t>(c) * kChunk;
    add_arrays(pa + first, pb + first, py + first, std::min(kChunk, n - first));
  }
  return y;
}

}  // namespace mpsim
