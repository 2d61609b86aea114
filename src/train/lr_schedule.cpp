// Learning-rate schedules as closed forms of the step (the formulas are in mpsim/optim.h).
#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

#include "mpsim/optim.h"

namespace mpsim {

const char* to_string(LrScheduleKind kind) {
  switch (kind) {
    case LrScheduleKind::constant: return "constant";
    case LrScheduleKind::step: return "step";
    case LrScheduleKind::multistep: return "multistep";
    case LrScheduleKind::cosine: return "cosine";
  }
  return "?";
}

LrScheduleKind parse_lr_schedule(const std::string& text) {
  for (const LrScheduleKind k :
       {LrScheduleKind::constant, LrScheduleKind::step, LrScheduleKind::multistep, LrScheduleKind::cosine}) {
    if (text == to_string(k)) return k;
  }
  throw std::invalid_argument("unknown learning-rate schedule '" + text +
                              "' (expected constant, step, multistep or cosine)");
}

namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("learning-rate schedule: " + what); }

bool finite_nonneg(double x) { return std::isfinite(x) && x >= 0; }

}  // namespace

void LrSchedule::validate() const {
  if (!finite_nonneg(base_lr)) bad("base_lr " + std::to_string(base_lr) + " is not a finite value >= 0");
  if (update_every == 0) bad("update_every is 0");
  if (kind == LrScheduleKind::step || kind == LrScheduleKind::multistep) {
    if (!(gamma > 0) || !std::isfinite(gamma)) bad("gamma " + std::to_string(gamma) + " is not a finite value > 0");
  }
  if (kind == LrScheduleKind::step && step_size == 0) bad("step_size is 0");
  if (kind == LrScheduleKind::multistep) {
    for (std::size_t i = 1; i < milestones.size(); ++i) {
      if (milestones[i] <= milestones[i - 1]) {
        bad("milestones must increase strictly (" + std::to_string(milestones[i - 1]) + " then " +
            std::to_string(milestones[i]) + ")");
      }
    }
  }
  if (kind == LrScheduleKind::cosine) {
    if (total == 0) bad("cosine total is 0");
    if (!finite_nonneg(eta_min)) bad("eta_min " + std::to_string(eta_min) + " is not a finite value >= 0");
  }
  if (warmup_steps > 0 && !(warmup_start > 0 && warmup_start <= 1)) {
    bad("warm-up start factor " + std::to_string(warmup_start) + " is not in (0, 1]");
  }
}

double LrSchedule::lr(std::uint64_t s) const {
  validate();
  const std::uint64_t t = s / update_every * update_every;
  double rate = base_lr;
  switch (kind) {
    case LrScheduleKind::constant: break;
    case LrScheduleKind::step: rate = base_lr * std::pow(gamma, static_cast<double>(t / step_size)); break;
    case LrScheduleKind::multistep: {
      const auto passed = std::upper_bound(milestones.begin(), milestones.end(), t) - milestones.begin();
      rate = base_lr * std::pow(gamma, static_cast<double>(passed));
      break;
    }
    case LrScheduleKind::cosine:
      rate = t >= total ? eta_min
                        : eta_min + (base_lr - eta_min) *
                                        (1.0 + std::cos(std::numbers::pi * static_cast<double>(t) /
                                                        static_cast<double>(total))) / 2.0;
      break;
  }
  if (s < warmup_steps) {
    rate *= warmup_start + (1.0 - warmup_start) * static_cast<double>(s) / static_cast<double>(warmup_steps);
  }
  return rate;
}

LrSchedule epochs_to_steps(LrSchedule schedule, std::uint64_t steps_per_epoch, bool per_epoch) {
  if (steps_per_epoch == 0) bad("0 steps per epoch");
  schedule.step_size *= steps_per_epoch;
  for (std::uint64_t& m : schedule.milestones) m *= steps_per_epoch;
  schedule.total *= steps_per_epoch;
  schedule.warmup_steps *= steps_per_epoch;
  schedule.update_every = per_epoch ? steps_per_epoch : 1;
  return schedule;
}

}  // namespace mpsim
