// Optimizers and learning-rate schedules.
//
// The updates are PyTorch's single-tensor (foreach=False) CPU paths of torch.optim.SGD, Adam and
// AdamW, element by element in float32 with the same operations in the same order; each class
// comment lists them. Where PyTorch's vectorized CPU kernels use a fused multiply-add
// (Tensor.add(other, alpha=a) is fmadd(other, a, self); lerp is fmadd(weight, end - self, self)),
// so does mpsim, through std::fma, which rounds once on every machine; every other operation
// rounds after each step. Hyperparameters reach the kernels as PyTorch passes them: Python
// floats (double) combined in double where PyTorch's Python code combines them (1 - dampening,
// lr / bias_correction1, ...), then rounded to float32 for the element-wise kernel.
//
// The state (momentum buffers, Adam moments, the step counter) can be saved as named tensors
// and loaded back; a run resumed from it continues with the same bits.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "mpsim/tensor.h"

namespace mpsim {

// Everything an optimizer carries from one step to the next.
struct OptimizerState {
  std::uint64_t step = 0;                 // steps taken
  std::map<std::string, Tensor> tensors;  // "momentum/<param>", "adam_m/<param>", "adam_v/<param>"
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // One update of every parameter from its grad at learning rate `lr` (the schedule's value
  // for this step). Parameters are identified by name: the state of "fc1.weight" belongs to
  // whichever Parameter carries that name. Throws std::invalid_argument for a negative or
  // non-finite lr, a grad whose shape differs from its value, a duplicate or empty name, or a
  // state tensor whose shape no longer matches its parameter.
  // Parallel over elements; results do not depend on the thread count.
  void step(const std::vector<Parameter*>& params, double lr);

  // "sgd", "adam", "adamw"
  virtual std::string name() const = 0;
  std::uint64_t steps() const { return step_; }

  OptimizerState state() const { return {step_, tensors_}; }
  // Replaces the state. Throws std::invalid_argument for a tensor name that is not one of this
  // optimizer's kinds ("momentum/" for SGD; "adam_m/", "adam_v/" for Adam and AdamW), an Adam
  // moment without its partner, or (with `params` non-empty) a name that no parameter has or a
  // shape that differs from its parameter's.
  void load_state(const OptimizerState& state, const std::vector<Parameter*>& params = {});

 protected:
  // Updates one parameter; `step` is the 1-based number of this step.
  virtual void update(Parameter& p, double lr, std::uint64_t step) = 0;
  // The state-name prefixes this optimizer owns.
  virtual std::vector<std::string> state_kinds() const = 0;

  // The state tensor `kind/name`, created zero-filled with the parameter's shape if absent
  // (`created` tells which).
  Tensor& state_tensor(const std::string& kind, const Parameter& p, bool* created = nullptr);

 private:
  std::uint64_t step_ = 0;
  std::map<std::string, Tensor> tensors_;
};

// ---- SGD -----------------------------------------------------------------------------------

struct SgdOptions {
  double momentum = 0;      // in [0, 1)
  double dampening = 0;     // in [0, 1]
  bool nesterov = false;    // requires momentum > 0 and dampening == 0 (as PyTorch)
  double weight_decay = 0;  // L2, added to the gradient; >= 0
};

// torch.optim.SGD. Per element, with w = float(weight_decay), mu = float(momentum),
// a = float(1 - dampening), l = float(-lr):
//   g = fma(p, w, g)                       if weight_decay != 0
//   b = g                                  first step (the buffer is created from g)
//   b = fma(g, a, b * mu)                  later steps (b * mu rounded first)
//   g = fma(b, mu, g) if nesterov, else g = b          (only if momentum != 0)
//   p = fma(g, l, p)
class Sgd : public Optimizer {
 public:
  // Throws std::invalid_argument for options out of range.
  explicit Sgd(SgdOptions options);
  std::string name() const override { return "sgd"; }
  const SgdOptions& options() const { return options_; }

 protected:
  void update(Parameter& p, double lr, std::uint64_t step) override;
  std::vector<std::string> state_kinds() const override { return {"momentum"}; }

 private:
  SgdOptions options_;
};

// ---- Adam and AdamW ------------------------------------------------------------------------

struct AdamOptions {
  double beta1 = 0.9;       // in [0, 1)
  double beta2 = 0.999;     // in [0, 1)
  double eps = 1e-8;        // >= 0
  double weight_decay = 0;  // >= 0: Adam adds wd * p to the gradient, AdamW decays p directly
};

// torch.optim.Adam (decoupled = false) and torch.optim.AdamW (decoupled = true), amsgrad off.
// Step t (1-based); in double: bc1 = 1 - beta1^t, bc2 = 1 - beta2^t, step_size = lr / bc1,
// bc2_sqrt = sqrt(bc2). Per element in float32, with w = float(wd), c1 = float(1 - beta1),
// b2 = float(beta2), c2 = float(1 - beta2):
//   p = p * float(1 - lr * wd)              AdamW, if wd != 0
//   g = fma(p, w, g)                        Adam, if wd != 0
//   m = fma(c1, g - m, m)                   torch.lerp(m, g, c1) for c1 < 0.5
//   m = fma(c1 - 1, g - m, g)               torch.lerp for c1 >= 0.5
//   v = v * b2 + (c2 * g) * g               mul_, then addcmul_ (three roundings)
//   d = sqrt(v) / float(bc2_sqrt) + float(eps)
//   p = p + (float(-step_size) * m) / d     addcdiv_
class Adam : public Optimizer {
 public:
  // Throws std::invalid_argument for options out of range.
  explicit Adam(AdamOptions options, bool decoupled = false);
  std::string name() const override { return decoupled_ ? "adamw" : "adam"; }
  const AdamOptions& options() const { return options_; }
  bool decoupled() const { return decoupled_; }

 protected:
  void update(Parameter& p, double lr, std::uint64_t step) override;
  std::vector<std::string> state_kinds() const override { return {"adam_m", "adam_v"}; }

 private:
  AdamOptions options_;
  bool decoupled_;
};

class AdamW : public Adam {
 public:
  explicit AdamW(AdamOptions options) : Adam(options, true) {}
};

// ---- learning-rate schedules ---------------------------------------------------------------

enum class LrScheduleKind { constant, step, multistep, cosine };
const char* to_string(LrScheduleKind kind);
// "constant", "step", "multistep", "cosine"; throws std::invalid_argument otherwise.
LrScheduleKind parse_lr_schedule(const std::string& text);

// A learning rate as a pure function of the global step s = 0, 1, 2, ... (the step about to be
// taken), in double, from closed forms (not PyTorch's recursive updates, which may differ in
// the last bits). All lengths are in steps. The main schedule reads the clock
// t = floor(s / update_every) * update_every: update_every = 1 changes the rate every step,
// update_every = steps per epoch holds it through each epoch, as PyTorch's schedulers do when
// scheduler.step() is called once per epoch. With T = total:
//   constant   f(t) = 1
//   step       f(t) = gamma ^ floor(t / step_size)
//   multistep  f(t) = gamma ^ (number of milestones <= t)
//   cosine     f(t) = (eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T)) / 2) / base_lr,
//              eta_min / base_lr for t >= T (PyTorch's formula would rise again after T)
// Linear warm-up multiplies (PyTorch's ChainedScheduler of LinearLR and the main schedule; the
// main schedule's clock is not delayed): w(s) = start + (1 - start) * s / W for s < W, else 1,
// evaluated on the step s itself. lr(s) = base_lr * f(t) * w(s).
struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::constant;
  double base_lr = 0.01;
  double gamma = 0.1;                     // step, multistep
  std::uint64_t step_size = 0;            // step: > 0
  std::vector<std::uint64_t> milestones{};  // multistep: strictly increasing
  std::uint64_t total = 0;                // cosine: T > 0
  double eta_min = 0;                     // cosine: >= 0
  std::uint64_t warmup_steps = 0;         // W (0: no warm-up)
  double warmup_start = 0.1;              // in (0, 1]
  std::uint64_t update_every = 1;         // > 0

  // Throws std::invalid_argument naming the first bad field.
  void validate() const;
  // The rate of step s (validates first).
  double lr(std::uint64_t s) const;
};

// A schedule whose lengths (step_size, milestones, total, warmup_steps) are in epochs, converted
// to steps: each length times steps_per_epoch, and update_every = steps_per_epoch when
// `per_epoch` (the rate changes at epoch boundaries, as with a per-epoch scheduler.step()), else
// 1 (a smooth per-step curve, e.g. cosine). Throws std::invalid_argument for steps_per_epoch 0.
LrSchedule epochs_to_steps(LrSchedule schedule, std::uint64_t steps_per_epoch, bool per_epoch = true);

}  // namespace mpsim
