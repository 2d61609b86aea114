// The trainer's bridge from a TrainConfig to the optimizer, its checkpointed state and the
// learning-rate schedule.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "mpsim/config.h"
#include "mpsim/optim.h"
#include "mpsim/safetensors.h"

namespace mpsim::detail {

std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& config);

// The optimizer's state as checkpoint tensors (metadata "optimizer", "optimizer_step"), and
// back; load throws CheckpointError for a state of another optimizer or that does not fit.
TensorFile optimizer_state(const Optimizer& optimizer);
void load_optimizer_state(Optimizer& optimizer, const TensorFile& file, const std::vector<Parameter*>& params);

// The schedule of [schedule] in steps: step and multistep change the rate at epoch boundaries
// (as a per-epoch scheduler.step() in PyTorch), cosine follows a smooth per-step curve over the
// whole run; the warm-up is per step.
LrSchedule lr_schedule(const TrainConfig& config, std::uint64_t steps_per_epoch);

}  // namespace mpsim::detail
