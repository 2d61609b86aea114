// `mpsim train` and `mpsim eval`: training runs from a TOML config (docs/configs.md) with
// key=value overrides, resumable from a run directory; evaluation of a checkpoint.
#include <fmt/core.h>
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "mpsim/checkpoint.h"
#include "mpsim/config.h"
#include "mpsim/train.h"

namespace mpsim::cli {

namespace {

struct TrainArgs {
  std::string config;
  std::string resume;
  std::string run_dir;
  std::vector<std::string> overrides;
  bool quiet = false;
  bool json = false;
  bool list_keys = false;
};

// Config problems are usage errors (exit 2), like malformed format strings.
template <typename F>
auto as_usage(F&& f) {
  try {
    return f();
  } catch (const ConfigError& e) {
    throw UsageError(e.what());
  }
}

std::string precision_label(const TrainConfig& c) {
  if (c.fwd.empty() && c.bwd.empty() && c.grad.empty()) return c.mac == "fp32" ? "fp32 (OpenBLAS)" : c.mac;
  return "fwd " + (c.fwd.empty() ? c.mac : c.fwd) + " | bwd " + (c.bwd.empty() ? c.mac : c.bwd) + " | grad " +
         (c.grad.empty() ? c.mac : c.grad);
}

int run_train(const TrainArgs& a) {
  if (a.list_keys) {
    fmt::print("{:<26}{:<24}{:<20}{}\n", "key", "type", "default", "meaning");
    for (const ConfigKey& k : config_keys()) fmt::print("{:<26}{:<24}{:<20}{}\n", k.key, k.type, k.default_value, k.help);
    return kOk;
  }
  if (a.config.empty() == a.resume.empty()) throw UsageError("train: give exactly one of --config FILE and --resume DIR");
  TrainOptions o;
  TrainConfig c = as_usage([&] { return load_config(a.resume.empty() ? a.config : a.resume + "/config.toml"); });
  for (const std::string& kv : a.overrides) as_usage([&] { apply_override(c, kv); return 0; });
  as_usage([&] { validate(c); return 0; });
  o.resume = !a.resume.empty();
  o.run_dir = !a.resume.empty() ? a.resume : a.run_dir;
  o.log = a.quiet ? nullptr : &std::cerr;
  o.progress = isatty(STDERR_FILENO) != 0;
  if (!a.quiet) {
    std::cerr << fmt::format("mpsim train: {} on {} ({} epochs, batch {}), precision {}, seed {}\n", c.model.arch, c.dataset,
                             c.epochs, c.batch_size, precision_label(c), c.seed);
  }
  const TrainSummary s = train(c, o);
  const EpochRecord last = s.epochs.empty() ? EpochRecord{} : s.epochs.back();
  double best = 0;
  for (const EpochRecord& r : s.epochs) best = std::max(best, r.test_accuracy);
  double ips = 0;
  for (const EpochRecord& r : s.epochs) ips += r.images_per_second;
  if (!s.epochs.empty()) ips /= static_cast<double>(s.epochs.size());
  if (a.json) {
    nlohmann::json j = {{"run_dir", s.run_dir},         {"arch", c.model.arch},
                        {"dataset", c.dataset},         {"precision", precision_label(c)},
                        {"epochs", s.epochs.size()},    {"steps", s.steps},
                        {"test_accuracy", nullptr},     {"best_test_accuracy", nullptr},
                        {"test_loss", nullptr},         {"train_loss", nullptr},
                        {"images_per_second", nullptr}, {"seconds", s.seconds},
                        {"parameters", s.parameters},   {"macs_per_image", s.macs_per_image}};
    if (!s.epochs.empty()) {  // null while no epoch completed (stopped by train.max_steps)
      j["test_accuracy"] = last.test_accuracy;
      j["best_test_accuracy"] = best;
      j["test_loss"] = last.test_loss;
      j["train_loss"] = last.train_loss;
      j["images_per_second"] = ips;
    }
    std::cout << j.dump(2) << "\n";
  } else {
    fmt::print("run            {}\n", s.run_dir);
    fmt::print("model          {} ({} parameters, {:.3g} MACs per image per training step)\n", c.model.arch, s.parameters,
               s.macs_per_image);
    fmt::print("precision      {}\n", precision_label(c));
    fmt::print("epochs         {} ({} steps)\n", s.epochs.size(), s.steps);
    if (s.epochs.empty()) {
      // Stopped by train.max_steps inside the first epoch: nothing was evaluated yet.
      fmt::print("test accuracy  not evaluated (no epoch completed; --resume continues it)\n");
      fmt::print("wall time      {:.1f} s\n", s.seconds);
    } else {
      fmt::print("test accuracy  {:.2f}% (best {:.2f}%), test loss {:.4f}\n", 100 * last.test_accuracy, 100 * best,
                 last.test_loss);
      fmt::print("throughput     {:.0f} images/s (training), wall time {:.1f} s\n", ips, s.seconds);
    }
  }
  return kOk;
}

struct EvalArgs {
  std::string checkpoint;
  std::string data_path;
  std::string split = "test";
  std::size_t subset = 0;
  int threads = 0;
  bool json = false;
};

int run_eval(const EvalArgs& a) {
  if (a.split != "test" && a.split != "train") throw UsageError("eval: --split must be test or train");
  const Checkpoint ck = load_checkpoint(a.checkpoint);
  const auto meta = [&](const std::string& key) {
    const auto it = ck.state.metadata.find(key);
    if (it == ck.state.metadata.end()) throw CheckpointError(a.checkpoint + ": the checkpoint has no '" + key + "' metadata");
    return it->second;
  };
  TrainConfig c = parse_config(meta("config"), a.checkpoint + " (config)");
  if (!a.data_path.empty()) c.data_path = a.data_path;
  if (a.threads > 0) c.threads = a.threads;
  c.train_subset = c.test_subset = a.subset;
  const Dataset data = a.split == "test" ? load_test_data(c) : load_train_data(c);
  auto model = make_model_for(c, data);
  load_model_state(*model, ck.model);
  std::optional<Normalization> norm;
  const nlohmann::json nj = nlohmann::json::parse(meta("normalization"));
  if (!nj.is_null()) norm = Normalization{nj.at("mean").get<std::vector<double>>(), nj.at("std").get<std::vector<double>>()};
  const EvalResult r = evaluate(*model, data, norm, c.eval_batch_size, c.threads);
  if (a.json) {
    std::cout << nlohmann::json{{"checkpoint", a.checkpoint}, {"epoch", ck.epoch}, {"split", a.split}, {"samples", r.samples},
                                {"loss", r.loss}, {"accuracy", r.accuracy}, {"seconds", r.seconds}}
                     .dump(2)
              << "\n";
  } else {
    fmt::print("{} (epoch {}, {}, precision {}) on {} {}: accuracy {:.2f}%, loss {:.4f} ({} samples, {:.1f} s)\n",
               a.checkpoint, ck.epoch, c.model.arch, precision_label(c), c.dataset, a.split, 100 * r.accuracy, r.loss,
               r.samples, r.seconds);
  }
  return kOk;
}

}  // namespace

Runner add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a model as a TOML config says (docs/configs.md), printing progress and a final summary.\n"
      "Writes <run.out_dir>/<run.name>/: config.toml (resolved), metrics.jsonl, metrics.csv, checkpoints/.\n"
      "Any key can be overridden: mpsim train --config configs/lenet5_fmnist_fp32.toml optim.lr=0.05 train.epochs=2");
  cmd->add_option("--config,-c", a->config, "TOML configuration file");
  cmd->add_option("--resume", a->resume, "continue the run in this directory from its latest checkpoint");
  cmd->add_option("--run-dir", a->run_dir, "run directory (default: <run.out_dir>/<run.name>)");
  cmd->add_option("overrides", a->overrides, "key=value overrides, applied after the file");
  cmd->add_flag("--quiet,-q", a->quiet, "no progress or per-epoch lines on stderr");
  cmd->add_flag("--json", a->json, "print the summary as JSON on stdout");
  cmd->add_flag("--list-keys", a->list_keys, "list every configuration key with its type, default and meaning");
  return [a] { return run_train(*a); };
}

Runner add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Evaluate a checkpoint (or a run directory's latest) on a data set.");
  cmd->add_option("--checkpoint", a->checkpoint, "checkpoint directory, or a run directory")->required();
  cmd->add_option("--data-path", a->data_path, "folder of the data files (default: the one the run used)");
  cmd->add_option("--split", a->split, "test or train")->capture_default_str();
  cmd->add_option("--subset", a->subset, "evaluate on the first N samples per class-stratified subset (0: all)");
  cmd->add_option("--threads", a->threads, "threads (0: all cores)");
  cmd->add_flag("--json", a->json, "machine-readable output");
  return [a] { return run_eval(*a); };
}

}  // namespace mpsim::cli
