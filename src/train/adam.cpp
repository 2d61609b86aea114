// torch.optim.Adam and AdamW, element by element in float32 (the operation order is in
// mpsim/optim.h).
#include <cmath>
#include <stdexcept>

#include "mpsim/optim.h"

namespace mpsim {

namespace {

constexpr std::ptrdiff_t kParallelMin = 1 << 15;

}  // namespace

Adam::Adam(AdamOptions options, bool decoupled) : options_(options), decoupled_(decoupled) {
  const AdamOptions& o = options_;
  const std::string who = decoupled ? "adamw" : "adam";
  if (!(o.beta1 >= 0 && o.beta1 < 1)) throw std::invalid_argument(who + ": beta1 " + std::to_string(o.beta1) + " is not in [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) throw std::invalid_argument(who + ": beta2 " + std::to_string(o.beta2) + " is not in [0, 1)");
  if (!(o.eps >= 0) || !std::isfinite(o.eps)) {
    throw std::invalid_argument(who + ": eps " + std::to_string(o.eps) + " is not a finite value >= 0");
  }
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay)) {
    throw std::invalid_argument(who + ": weight decay " + std::to_string(o.weight_decay) + " is not a finite value >= 0");
  }
}

void Adam::update(Parameter& p, double lr, std::uint64_t step) {
  const AdamOptions& o = options_;
  // The scalars as PyTorch's Python code forms them (double), then float32 for the kernels.
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(o.beta1, t);
  const double bc2 = 1.0 - std::pow(o.beta2, t);
  const float neg_step_size = static_cast<float>(-(lr / bc1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float eps = static_cast<float>(o.eps);
  const float c1 = static_cast<float>(1.0 - o.beta1);
  const float b2 = static_cast<float>(o.beta2);
  const float c2 = static_cast<float>(1.0 - o.beta2);
  const float wd = static_cast<float>(o.weight_decay);
  const float shrink = static_cast<float>(1.0 - lr * o.weight_decay);
  const bool decay = o.weight_decay != 0, decoupled = decoupled_;
  // torch.lerp switches formulas at weight 0.5 for accuracy; both are one fused multiply-add.
  const bool small_weight = std::fabs(c1) < 0.5f;
  const float lerp_coeff = small_weight ? c1 : c1 - 1.0f;

  float* m = state_tensor("adam_m", p).data();
  float* v = state_tensor("adam_v", p).data();
  float* w = p.value.data();
  const float* grad = p.grad.data();
  const auto n = static_cast<std::ptrdiff_t>(p.value.size());
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    float g = grad[i];
    if (decay) {
      if (decoupled) {
        w[i] = w[i] * shrink;  // param.mul_(1 - lr * weight_decay)
      } else {
        g = std::fma(w[i], wd, g);  // grad.add(param, alpha=weight_decay)
      }
    }
    m[i] = std::fma(lerp_coeff, g - m[i], small_weight ? m[i] : g);  // exp_avg.lerp_(grad, 1 - beta1)
    const float vs = v[i] * b2;                                      // exp_avg_sq.mul_(beta2)
    v[i] = vs + (c2 * g) * g;                                        // .addcmul_(grad, grad, value=1 - beta2)
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;            // (sqrt() / bc2_sqrt).add_(eps)
    w[i] = w[i] + (neg_step_size * m[i]) / denom;                    // param.addcdiv_(m, denom, value=-step_size)
  }
}

}  // namespace mpsim
