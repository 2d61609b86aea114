// Deterministic parameter initialization from the counter-based generator: element i of a
// tensor is a pure function of (key, i), so a model initializes to the same bits whatever the
// thread count. Uniform draws take 53 random bits; normal draws use Box-Muller on two uniforms.
#pragma once

#include <cstddef>
#include <utility>

#include "mpsim/round.h"
#include "mpsim/tensor.h"

namespace mpsim {

// (fan_in, fan_out) of a weight tensor as PyTorch defines them: [out, in] for linear layers,
// [out, in, kh, kw] for convolutions (receptive field kh*kw multiplies both).
std::pair<std::size_t, std::size_t> fans(const Shape& weight_shape);

// U[lo, hi) element-wise.
void init_uniform(Tensor& t, double lo, double hi, const RandomKey& key);
// N(mean, std^2) element-wise.
void init_normal(Tensor& t, double mean, double std, const RandomKey& key);

enum class FanMode { fan_in, fan_out };

// He et al.: N(0, 2 / fan) (ReLU gain sqrt(2)), as torch.nn.init.kaiming_normal_.
void init_kaiming_normal(Tensor& w, FanMode mode, const RandomKey& key);
// U(-b, b) with b = sqrt(6 / ((1 + a^2) fan_in)), as torch.nn.init.kaiming_uniform_; a = sqrt(5)
// gives PyTorch's default Linear/Conv2d initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void init_kaiming_uniform(Tensor& w, double a, const RandomKey& key);
// Glorot: U(-b, b) with b = sqrt(6 / (fan_in + fan_out)), as torch.nn.init.xavier_uniform_.
void init_xavier_uniform(Tensor& w, const RandomKey& key);

}  // namespace mpsim
