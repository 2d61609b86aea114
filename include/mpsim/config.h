// Training configurations: a TOML file with a documented schema (docs/configs.md), command-line
// overrides `key=value` with dotted keys ("optim.lr=0.05"), and the resolved configuration
// written back as TOML into every run directory. Every key is declared once, in
// src/train/config.cpp, with its type, default and description; parsing, overrides, the
// resolved file and `mpsim train --list-keys` all read that one table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/model.h"

namespace mpsim {

// A malformed configuration: a syntax error, an unknown key, a value of the wrong type or out
// of range. The message names the file (or "command line"), the line and the key.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TrainConfig {
  // [run]
  std::string name = "run";       // run directory name under out_dir
  std::string out_dir = "runs";
  std::uint64_t seed = 0;
  int threads = 0;                // 0: all cores (OpenMP's default)

  // [data]
  std::string dataset = "fashion-mnist";  // fashion-mnist | mnist | cifar10 | cifar100
  std::string data_path;                  // empty: the data set's default location
  std::size_t train_subset = 0;           // 0: the whole training set
  std::size_t test_subset = 0;            // 0: the whole test set
  bool normalize = true;                  // per-channel mean/std of the training set
  std::size_t crop_padding = 0;           // random crop after zero padding (0: off)
  bool flip = false;                      // random horizontal flip
  std::size_t batch_size = 128;
  std::size_t eval_batch_size = 500;

  // [model] (channels, size and classes come from the data set)
  ModelConfig model;

  // [precision]: "fp32" (plain FP32 through OpenBLAS) or a MAC spec; fwd/bwd/grad override mac.
  std::string mac = "fp32";
  std::string fwd, bwd, grad;  // empty: same as mac

  // [optim]
  std::string optimizer = "sgd";  // sgd | adam | adamw
  double lr = 0.01;
  double momentum = 0.9;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;

  // [schedule]
  std::string schedule = "constant";       // constant | step | multistep | cosine
  std::size_t step_size = 30;              // epochs (step)
  std::vector<std::size_t> milestones;     // epochs (multistep)
  double gamma = 0.1;                      // step / multistep factor
  double eta_min = 0.0;                    // cosine floor
  double warmup_epochs = 0.0;              // linear warm-up length in epochs (0: none)
  double warmup_start = 0.1;               // warm-up starting factor of lr

  // [train]
  std::size_t epochs = 1;
  double label_smoothing = 0.0;
  std::size_t max_steps = 0;               // stop after this many steps in all (0: no limit)
  std::size_t checkpoint_every = 1;        // epochs between checkpoints (0: only the last)
};

// One declared key, for documentation and `--list-keys`.
struct ConfigKey {
  std::string key;          // "optim.lr"
  std::string type;         // "string", "integer", "float", "bool", "integer list"
  std::string default_value;
  std::string help;
};
const std::vector<ConfigKey>& config_keys();

// Parses TOML text (`source` names it in errors) over the defaults; throws ConfigError.
TrainConfig parse_config(const std::string& toml_text, const std::string& source);
// Reads a file; a missing or unreadable file is a ConfigError naming it.
TrainConfig load_config(const std::string& path);
// Applies "key=value" overrides in order. The value is read as a TOML value ("0.1", "true",
// "[30, 60]", "\"text\"") or, when it is not one, as a bare string ("model.arch=resnet20").
void apply_override(TrainConfig& config, const std::string& assignment);
// Checks ranges and combinations (known data set, optimizer, schedule, MAC specs parse, ...).
void validate(const TrainConfig& config);
// The complete configuration as TOML, every key present: parse_config(to_toml(c)) == c.
std::string to_toml(const TrainConfig& config);

// The GEMM precision the [precision] section describes; throws ConfigError for a bad spec.
GemmPrecision gemm_precision(const TrainConfig& config);

bool operator==(const TrainConfig& a, const TrainConfig& b);

}  // namespace mpsim
