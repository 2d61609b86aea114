// torch.optim.SGD, element by element in float32 (the operation order is in mpsim/optim.h).
#include <cmath>
#include <stdexcept>

#include "mpsim/optim.h"

namespace mpsim {

namespace {

bool in_range(double x, double lo, double hi) { return x >= lo && x <= hi; }

// Below this many elements a parallel region costs more than it saves.
constexpr std::ptrdiff_t kParallelMin = 1 << 15;

}  // namespace

Sgd::Sgd(SgdOptions options) : options_(options) {
  const SgdOptions& o = options_;
  if (!(in_range(o.momentum, 0, 1) && o.momentum < 1)) {
    throw std::invalid_argument("sgd: momentum " + std::to_string(o.momentum) + " is not in [0, 1)");
  }
  if (!in_range(o.dampening, 0, 1)) {
    throw std::invalid_argument("sgd: dampening " + std::to_string(o.dampening) + " is not in [0, 1]");
  }
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay)) {
    throw std::invalid_argument("sgd: weight decay " + std::to_string(o.weight_decay) + " is not a finite value >= 0");
  }
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0)) {
    throw std::invalid_argument("sgd: Nesterov momentum requires a momentum > 0 and zero dampening");
  }
}

void Sgd::update(Parameter& p, double lr, std::uint64_t /*step*/) {
  const SgdOptions& o = options_;
  // PyTorch hands each scalar to the float kernel as float32; 1 - dampening and -lr are formed
  // in double first, as in its Python code.
  const float wd = static_cast<float>(o.weight_decay);
  const float mu = static_cast<float>(o.momentum);
  const float keep = static_cast<float>(1.0 - o.dampening);
  const float neg_lr = static_cast<float>(-lr);
  const bool decay = o.weight_decay != 0, use_momentum = o.momentum != 0, nesterov = o.nesterov;
  bool first = false;
  float* buf = use_momentum ? state_tensor("momentum", p, &first).data() : nullptr;
  float* w = p.value.data();
  const float* grad = p.grad.data();
  const auto n = static_cast<std::ptrdiff_t>(p.value.size());
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    float g = grad[i];
    if (decay) g = std::fma(w[i], wd, g);  // grad.add(param, alpha=weight_decay)
    if (use_momentum) {
      if (first) {
        buf[i] = g;  // torch.clone(grad)
      } else {
        const float scaled = buf[i] * mu;     // buf.mul_(momentum)
        buf[i] = std::fma(g, keep, scaled);   // .add_(grad, alpha=1 - dampening)
      }
      g = nesterov ? std::fma(buf[i], mu, g) : buf[i];  // grad.add(buf, alpha=momentum) / buf
    }
    w[i] = std::fma(g, neg_lr, w[i]);  // param.add_(grad, alpha=-lr)
  }
}

}  // namespace mpsim
