// Checkpoints of a training run. A checkpoint is a directory
//   <run>/checkpoints/epoch-EEEE-step-SSSSSSSS/model.safetensors
//       parameters and buffers under their PyTorch state_dict names (float32)
//   <run>/checkpoints/epoch-EEEE-step-SSSSSSSS/state.safetensors
//       optimizer state; metadata: completed epochs and steps, the resolved config, the metrics
//       so far, the input normalization, and (for a checkpoint inside an epoch) the epoch's
//       running sums
// and <run>/checkpoints/latest names the newest complete one. Writing is atomic at every level:
// both files go into a temporary directory that is flushed and renamed into place, and only
// then is `latest` replaced (itself by rename) and older checkpoints removed. A process
// killed at any moment leaves `latest` pointing to a complete checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include "mpsim/model.h"
#include "mpsim/safetensors.h"

namespace mpsim {

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Checkpoint {
  std::uint64_t epoch = 0;  // completed epochs
  std::uint64_t step = 0;   // completed training steps
  TensorFile model;         // parameters and buffers by name
  TensorFile state;         // optimizer state by name; metadata holds the rest
};

// Writes `checkpoint` as <run_dir>/checkpoints/epoch-<epoch>-step-<step>, points `latest` at it and removes
// every other checkpoint directory and left-over temporary under checkpoints/ (a run keeps only its newest;
// names not of the form epoch-E-step-S are left alone). Returns the new directory.
std::string save_checkpoint(const std::string& run_dir, const Checkpoint& checkpoint);

// The directory `latest` names under <run_dir>/checkpoints, or nullopt if there is none.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// Reads a checkpoint directory (or a run directory: its latest checkpoint). Throws
// CheckpointError naming what is missing or corrupt.
Checkpoint load_checkpoint(const std::string& path);

// The model's parameters and buffers as a TensorFile, and back. load_model_state throws
// CheckpointError for a missing or extra name or a shape mismatch, naming it.
TensorFile model_state(Model& model);
void load_model_state(Model& model, const TensorFile& file);

}  // namespace mpsim
