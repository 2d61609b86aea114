#include "src/train/from_config.h"

#include <cmath>

#include "mpsim/checkpoint.h"

namespace mpsim::detail {

std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& c) {
  if (c.optimizer == "sgd") {
    SgdOptions o;
    o.momentum = c.momentum;
    o.dampening = c.dampening;
    o.nesterov = c.nesterov;
    o.weight_decay = c.weight_decay;
    return std::make_unique<Sgd>(o);
  }
  AdamOptions o;
  o.beta1 = c.beta1;
  o.beta2 = c.beta2;
  o.eps = c.eps;
  o.weight_decay = c.weight_decay;
  if (c.optimizer == "adamw") return std::make_unique<AdamW>(o);
  return std::make_unique<Adam>(o);
}

TensorFile optimizer_state(const Optimizer& optimizer) {
  const OptimizerState s = optimizer.state();
  TensorFile f;
  f.tensors = s.tensors;
  f.metadata["optimizer"] = optimizer.name();
  f.metadata["optimizer_step"] = std::to_string(s.step);
  return f;
}

void load_optimizer_state(Optimizer& optimizer, const TensorFile& file, const std::vector<Parameter*>& params) {
  const auto name = file.metadata.find("optimizer");
  const auto step = file.metadata.find("optimizer_step");
  if (name == file.metadata.end() || step == file.metadata.end()) {
    throw CheckpointError("the checkpoint's state has no optimizer metadata");
  }
  if (name->second != optimizer.name()) {
    throw CheckpointError("the checkpoint holds " + name->second + " state; the config asks for " + optimizer.name());
  }
  OptimizerState s;
  s.step = std::stoull(step->second);
  s.tensors = file.tensors;
  try {
    optimizer.load_state(s, params);
  } catch (const std::invalid_argument& e) {
    throw CheckpointError(std::string("optimizer state: ") + e.what());
  }
}

LrSchedule lr_schedule(const TrainConfig& c, std::uint64_t steps_per_epoch) {
  LrSchedule s;
  s.kind = parse_lr_schedule(c.schedule);
  s.base_lr = c.lr;
  s.gamma = c.gamma;
  s.step_size = c.step_size;
  s.milestones.assign(c.milestones.begin(), c.milestones.end());
  s.total = c.epochs;
  s.eta_min = c.eta_min;
  s.warmup_start = c.warmup_start;
  s = epochs_to_steps(s, steps_per_epoch, s.kind != LrScheduleKind::cosine);
  s.warmup_steps = static_cast<std::uint64_t>(std::llround(c.warmup_epochs * static_cast<double>(steps_per_epoch)));
  return s;
}

}  // namespace mpsim::detail
