// The trainer: data in, a trained model, metrics and checkpoints out, resumable and
// reproducible (docs/configs.md, docs/training.md).
//
// A run directory holds config.toml (the resolved configuration), metrics.jsonl and
// metrics.csv (one record per epoch), and checkpoints/ (include/mpsim/checkpoint.h). Every
// random choice is a pure function of (seed, epoch, step, index), and checkpoints are taken at
// epoch ends, so a run resumed from a checkpoint continues exactly as the uninterrupted run
// would have: the same bits, in every emulated mode and for any thread count.
#pragma once

#include <cstddef>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/config.h"
#include "mpsim/data.h"
#include "mpsim/model.h"

namespace mpsim {

// Training cannot go on: a non-finite loss or gradient (the message names the step and the
// first parameter concerned), or a run directory that does not match its checkpoint.
struct TrainingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct EpochRecord {
  std::size_t epoch = 0;         // 1-based
  std::size_t step = 0;          // training steps completed after this epoch
  double lr = 0;                 // learning rate of the epoch's last step
  double train_loss = 0;         // mean of the batch losses
  double train_accuracy = 0;     // fraction of training samples classified right (train mode)
  double test_loss = 0;
  double test_accuracy = 0;
  double train_seconds = 0;      // wall time of the epoch's training steps
  double images_per_second = 0;  // training throughput
};

struct TrainOptions {
  std::string run_dir;   // empty: <out_dir>/<name>
  bool resume = false;   // continue from run_dir's latest checkpoint
  bool progress = true;  // a progress bar on `log` (the CLI turns it off when not a terminal)
  std::ostream* log = nullptr;  // progress and per-epoch lines (nullptr: silent)
};

struct TrainSummary {
  std::string run_dir;
  std::vector<EpochRecord> epochs;  // every epoch of the run, resumed ones included
  std::size_t steps = 0;
  double seconds = 0;  // wall time of this invocation
  std::size_t parameters = 0;
  double macs_per_image = 0;  // MACs of one training step per sample (all GEMMs)
};

// Trains as `config` says (validated first). Throws ConfigError, DataError, TrainingError,
// CheckpointError.
TrainSummary train(const TrainConfig& config, const TrainOptions& options);

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
  std::size_t samples = 0;
  double seconds = 0;
};

// Loss and accuracy of `model` in eval mode over `data` (normalized with `norm`).
EvalResult evaluate(Model& model, const Dataset& data, const std::optional<Normalization>& norm,
                    std::size_t batch_size, int threads);

// Loads the data sets of a config (train and test, subsets applied; 28x28 images padded where
// the model needs it is the model's business).
Dataset load_train_data(const TrainConfig& config);
Dataset load_test_data(const TrainConfig& config);

// The config's model ([model]) for the images and classes of `data`, initialized from the run's
// seed and with the GEMM precisions of [precision]: what train builds and eval loads into.
std::unique_ptr<Model> make_model_for(const TrainConfig& config, const Dataset& data);

}  // namespace mpsim
