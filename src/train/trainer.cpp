// The training loop: data, model, optimizer and schedule from a config; metrics and
// checkpoints into a run directory; resume from the latest checkpoint.
#include "mpsim/train.h"

#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "mpsim/checkpoint.h"
#include "src/io/atomic_file.h"
#include "src/train/from_config.h"
#include "src/train/progress.h"

namespace mpsim {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Writes `text` to `path` atomically and durably (src/io/atomic_file.h): never a partial file.
void write_atomically(const fs::path& path, const std::string& text) {
  try {
    detail::write_file_atomically(path, text);
  } catch (const detail::AtomicWriteError& e) {
    throw TrainingError(path.string() + ": " + e.what());
  }
}

json to_json(const EpochRecord& r) {
  return json{{"epoch", r.epoch},
              {"step", r.step},
              {"lr", r.lr},
              {"train_loss", r.train_loss},
              {"train_accuracy", r.train_accuracy},
              {"test_loss", r.test_loss},
              {"test_accuracy", r.test_accuracy},
              {"train_seconds", r.train_seconds},
              {"images_per_second", r.images_per_second}};
}

EpochRecord from_json(const json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch").get<std::size_t>();
  r.step = j.at("step").get<std::size_t>();
  r.lr = j.at("lr").get<double>();
  r.train_loss = j.at("train_loss").get<double>();
  r.train_accuracy = j.at("train_accuracy").get<double>();
  r.test_loss = j.at("test_loss").get<double>();
  r.test_accuracy = j.at("test_accuracy").get<double>();
  r.train_seconds = j.at("train_seconds").get<double>();
  r.images_per_second = j.at("images_per_second").get<double>();
  return r;
}

// metrics.jsonl and metrics.csv, rewritten whole after every epoch (so a resumed run's files
// hold exactly the epochs of its checkpoint and after).
void write_metrics(const fs::path& run_dir, const std::vector<EpochRecord>& records) {
  std::string jsonl, csv = "epoch,step,lr,train_loss,train_accuracy,test_loss,test_accuracy,train_seconds,images_per_second\n";
  for (const EpochRecord& r : records) {
    jsonl += to_json(r).dump() + "\n";
    char line[512];
    std::snprintf(line, sizeof line, "%zu,%zu,%.17g,%.17g,%.17g,%.17g,%.17g,%.6f,%.3f\n", r.epoch, r.step, r.lr, r.train_loss,
                  r.train_accuracy, r.test_loss, r.test_accuracy, r.train_seconds, r.images_per_second);
    csv += line;
  }
  write_atomically(run_dir / "metrics.jsonl", jsonl);
  write_atomically(run_dir / "metrics.csv", csv);
}

std::string normalization_json(const std::optional<Normalization>& n) {
  if (!n) return "null";
  return json{{"mean", n->mean}, {"std", n->std}}.dump();
}

// The running sums of an epoch in progress (stored in a checkpoint taken inside an epoch).
struct EpochProgress {
  double loss_sum = 0;
  std::size_t correct = 0, seen = 0, batches = 0;
  double seconds = 0, lr = 0;

  json to_json() const {
    return json{{"loss_sum", loss_sum}, {"correct", correct}, {"seen", seen}, {"batches", batches}, {"seconds", seconds}, {"lr", lr}};
  }
  static EpochProgress from_json(const json& j) {
    EpochProgress p;
    p.loss_sum = j.at("loss_sum").get<double>();
    p.correct = j.at("correct").get<std::size_t>();
    p.seen = j.at("seen").get<std::size_t>();
    p.batches = j.at("batches").get<std::size_t>();
    p.seconds = j.at("seconds").get<double>();
    p.lr = j.at("lr").get<double>();
    return p;
  }
};

// The first parameter whose gradient holds a NaN or an infinity, or nullptr.
const Parameter* first_non_finite_gradient(const std::vector<Parameter*>& params) {
  for (const Parameter* p : params) {
    for (const float g : p->grad.values()) {
      if (!std::isfinite(g)) return p;
    }
  }
  return nullptr;
}

void set_threads(int threads) {
  if (threads > 0) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
}

}  // namespace

Dataset load_train_data(const TrainConfig& c) {
  Dataset d = load_dataset(c.dataset, c.data_path, Split::train);
  if (c.train_subset > 0 && c.train_subset < d.size()) d = subset(d, c.train_subset, SubsetMode::stratified);
  return d;
}

std::unique_ptr<Model> make_model_for(const TrainConfig& config, const Dataset& data) {
  ModelConfig mc = config.model;
  mc.channels = data.channels();
  mc.height = data.height();
  mc.width = data.width();
  mc.classes = data.num_classes;
  std::unique_ptr<Model> model = make_model(mc, config.seed);
  model->set_precision(gemm_precision(config));
  return model;
}

Dataset load_test_data(const TrainConfig& c) {
  Dataset d = load_dataset(c.dataset, c.data_path, Split::test);
  if (c.test_subset > 0 && c.test_subset < d.size()) d = subset(d, c.test_subset, SubsetMode::stratified);
  return d;
}

EvalResult evaluate(Model& model, const Dataset& data, const std::optional<Normalization>& norm, std::size_t batch_size,
                    int threads) {
  const Clock::time_point t0 = Clock::now();
  LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  lo.batch.normalization = norm;
  lo.batch.threads = threads;
  DataLoader loader(data, lo);
  StepContext ctx;
  ctx.training = false;
  ctx.threads = threads;
  double loss_sum = 0;
  std::size_t correct = 0;
  for (std::size_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const Batch batch = loader.batch(0, b);
    const LossResult r = softmax_cross_entropy(model.forward(batch.images, ctx), batch.labels);
    loss_sum += r.loss * static_cast<double>(batch.labels.size());
    correct += r.correct;
  }
  EvalResult e;
  e.samples = data.size();
  e.loss = e.samples ? loss_sum / static_cast<double>(e.samples) : 0.0;
  e.accuracy = e.samples ? static_cast<double>(correct) / static_cast<double>(e.samples) : 0.0;
  e.seconds = seconds_since(t0);
  return e;
}

TrainSummary train(const TrainConfig& config, const TrainOptions& options) {
  validate(config);
  const Clock::time_point t0 = Clock::now();
  set_threads(config.threads);
  std::ostream* log = options.log;
  const fs::path run_dir = options.run_dir.empty() ? fs::path(config.out_dir) / config.name : fs::path(options.run_dir);

  if (!options.resume && latest_checkpoint(run_dir.string())) {
    throw TrainingError(run_dir.string() + " already holds a run with checkpoints; resume it with --resume " +
                        run_dir.string() + " or choose another run.name / run.out_dir");
  }
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) throw TrainingError(run_dir.string() + ": cannot create the run directory: " + ec.message());

  // Data, model, optimizer.
  const Dataset train_set = load_train_data(config);
  const Dataset test_set = load_test_data(config);
  std::optional<Normalization> norm;
  if (config.normalize) norm = channel_statistics(train_set);
  std::unique_ptr<Model> model = make_model_for(config, train_set);
  std::vector<Parameter*> params = model->parameters();
  std::unique_ptr<Optimizer> optimizer = detail::make_optimizer(config);

  LoaderOptions lo;
  lo.batch_size = config.batch_size;
  lo.shuffle = true;
  lo.drop_last = false;
  lo.batch.seed = config.seed;
  lo.batch.threads = config.threads;
  lo.batch.normalization = norm;
  lo.batch.augment.crop_padding = config.crop_padding;
  lo.batch.augment.flip_probability = config.flip ? 0.5 : 0.0;
  DataLoader loader(train_set, lo);
  const std::size_t steps_per_epoch = loader.batches_per_epoch();
  const LrSchedule schedule = detail::lr_schedule(config, steps_per_epoch);
  schedule.validate();

  TrainSummary summary;
  summary.run_dir = run_dir.string();
  summary.parameters = model->parameter_count();
  for (const GemmCount& g : model->gemms(1)) summary.macs_per_image += static_cast<double>(g.macs());

  // Position: completed epochs and steps; a checkpoint taken inside an epoch (train.max_steps)
  // also carries the running sums of that epoch, so resuming continues it exactly.
  std::size_t epoch = 0, step = 0;
  EpochProgress partial;
  if (options.resume) {
    const Checkpoint ck = load_checkpoint(run_dir.string());
    load_model_state(*model, ck.model);
    detail::load_optimizer_state(*optimizer, ck.state, params);
    epoch = ck.epoch;
    step = ck.step;
    if (step < epoch * steps_per_epoch || step > (epoch + 1) * steps_per_epoch) {
      throw TrainingError(run_dir.string() + ": the checkpoint (epoch " + std::to_string(epoch) + ", step " +
                          std::to_string(step) + ") does not match " + std::to_string(steps_per_epoch) +
                          " steps per epoch; was the data set or batch size changed?");
    }
    const auto it = ck.state.metadata.find("metrics");
    if (it != ck.state.metadata.end()) {
      for (const json& j : json::parse(it->second)) summary.epochs.push_back(from_json(j));
    }
    const auto p = ck.state.metadata.find("partial_epoch");
    if (p != ck.state.metadata.end()) partial = EpochProgress::from_json(json::parse(p->second));
    if (log) *log << "resuming " << run_dir.string() << " after epoch " << epoch << ", step " << step << "\n";
  }
  write_atomically(run_dir / "config.toml", to_toml(config));
  write_metrics(run_dir, summary.epochs);

  const auto checkpoint = [&](const EpochProgress* inside) {
    Checkpoint ck;
    ck.epoch = epoch;
    ck.step = step;
    ck.model = model_state(*model);
    ck.state = detail::optimizer_state(*optimizer);
    json metrics = json::array();
    for (const EpochRecord& r : summary.epochs) metrics.push_back(to_json(r));
    ck.state.metadata["metrics"] = metrics.dump();
    ck.state.metadata["config"] = to_toml(config);
    ck.state.metadata["normalization"] = normalization_json(norm);
    if (inside) ck.state.metadata["partial_epoch"] = inside->to_json().dump();
    save_checkpoint(run_dir.string(), ck);
  };

  detail::ProgressBar bar(log, options.progress);
  const bool step_limit = config.max_steps > 0;
  while (epoch < config.epochs && !(step_limit && step >= config.max_steps)) {
    const Clock::time_point te = Clock::now();
    bar.start(epoch + 1, config.epochs, steps_per_epoch);
    EpochProgress acc = partial;  // zero unless resuming inside this epoch
    partial = EpochProgress{};
    double lr = acc.lr;
    std::size_t b = step - epoch * steps_per_epoch;
    for (; b < steps_per_epoch && !(step_limit && step >= config.max_steps); ++b, ++step) {
      const Batch batch = loader.batch(epoch, b);
      StepContext ctx;
      ctx.training = true;
      ctx.seed = config.seed;
      ctx.step = step;
      ctx.threads = config.threads;
      const Tensor logits = model->forward(batch.images, ctx);
      const LossResult r = softmax_cross_entropy(logits, batch.labels, static_cast<float>(config.label_smoothing));
      if (!std::isfinite(r.loss)) {
        throw TrainingError("step " + std::to_string(step) + " (epoch " + std::to_string(epoch + 1) +
                            "): the loss is not finite (" + std::to_string(r.loss) +
                            "); the last checkpoint, if any, is intact");
      }
      model->backward(r.grad, ctx);
      if (const Parameter* p = first_non_finite_gradient(params)) {
        throw TrainingError("step " + std::to_string(step) + " (epoch " + std::to_string(epoch + 1) + "): the gradient of " +
                            p->name + " is not finite; the last checkpoint, if any, is intact");
      }
      lr = schedule.lr(step);
      optimizer->step(params, lr);
      acc.loss_sum += r.loss;
      acc.correct += r.correct;
      acc.seen += batch.labels.size();
      acc.batches += 1;
      acc.lr = lr;
      const double elapsed = acc.seconds + seconds_since(te);
      bar.update(b + 1, acc.loss_sum / static_cast<double>(acc.batches),
                 static_cast<double>(acc.correct) / static_cast<double>(acc.seen), static_cast<double>(acc.seen) / elapsed);
    }
    bar.finish();
    acc.seconds += seconds_since(te);
    if (b < steps_per_epoch) {
      // Stopped inside the epoch (train.max_steps): keep its position and sums for --resume.
      checkpoint(&acc);
      if (log) *log << "stopped at step " << step << " (train.max_steps), inside epoch " << epoch + 1 << "\n";
      break;
    }
    EpochRecord rec;
    rec.epoch = epoch + 1;
    rec.step = step;
    rec.lr = lr;
    rec.train_seconds = acc.seconds;
    rec.train_loss = acc.batches ? acc.loss_sum / static_cast<double>(acc.batches) : 0.0;
    rec.train_accuracy = acc.seen ? static_cast<double>(acc.correct) / static_cast<double>(acc.seen) : 0.0;
    rec.images_per_second = static_cast<double>(acc.seen) / acc.seconds;
    const EvalResult ev = evaluate(*model, test_set, norm, config.eval_batch_size, config.threads);
    rec.test_loss = ev.loss;
    rec.test_accuracy = ev.accuracy;
    summary.epochs.push_back(rec);
    ++epoch;
    if (log) {
      char line[256];
      std::snprintf(line, sizeof line, "epoch %zu/%zu  loss %.4f  train acc %.2f%%  test loss %.4f  test acc %.2f%%  %.0f img/s  %s\n",
                    rec.epoch, config.epochs, rec.train_loss, 100 * rec.train_accuracy, rec.test_loss,
                    100 * rec.test_accuracy, rec.images_per_second, detail::format_duration(rec.train_seconds).c_str());
      *log << line << std::flush;
    }
    write_metrics(run_dir, summary.epochs);
    const bool last = epoch == config.epochs || (step_limit && step >= config.max_steps);
    if (last || (config.checkpoint_every > 0 && epoch % config.checkpoint_every == 0)) checkpoint(nullptr);
  }
  summary.steps = step;
  summary.seconds = seconds_since(t0);
  return summary;
}

}  // namespace mpsim
