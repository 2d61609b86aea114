#include "mpsim/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>
#include <vector>

#include "src/io/atomic_file.h"

namespace mpsim {

namespace fs = std::filesystem;

namespace {

// "epoch-0003-step-00001407": completed epochs and steps (a checkpoint taken inside an epoch has
// the same epoch count as the one before it, so the step makes the name unique).
std::string checkpoint_dir_name(std::uint64_t epoch, std::uint64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "epoch-%04llu-step-%08llu", static_cast<unsigned long long>(epoch),
                static_cast<unsigned long long>(step));
  return buf;
}

// Whether `n` has the form checkpoint_dir_name makes (and nothing else), so that pruning never
// touches a file a user put beside the checkpoints.
bool is_checkpoint_dir_name(const std::string& n) {
  if (n.rfind("epoch-", 0) != 0) return false;
  const std::size_t dash = n.find("-step-", 6);
  if (dash == std::string::npos || dash == 6) return false;
  const auto digits = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
  };
  return digits(std::string_view(n).substr(6, dash - 6)) && digits(std::string_view(n).substr(dash + 6));
}

std::uint64_t read_number(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& where) {
  const auto it = meta.find(key);
  if (it == meta.end()) throw CheckpointError(where + ": metadata has no '" + key + "'");
  try {
    std::size_t used = 0;
    const unsigned long long v = std::stoull(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("trailing text");
    return v;
  } catch (const std::exception&) {
    throw CheckpointError(where + ": metadata '" + key + "' is not a number: " + it->second);
  }
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, const Checkpoint& c) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) throw CheckpointError(root.string() + ": cannot create: " + ec.message());
  const std::optional<std::string> previous = latest_checkpoint(run_dir);
  const std::string name = checkpoint_dir_name(c.epoch, c.step);
  const fs::path final_dir = root / name;
  // The newest checkpoint cannot be replaced in place without a moment in which `latest` names
  // nothing complete; a run only checkpoints after steps, so this means a caller's mistake.
  if (previous && fs::path(*previous) == final_dir) {
    throw CheckpointError(final_dir.string() + ": is already the latest checkpoint; a checkpoint at the same epoch and step is not replaced");
  }
  const fs::path tmp = root / (name + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  if (ec) throw CheckpointError(tmp.string() + ": cannot create: " + ec.message());
  try {
    TensorFile state = c.state;
    state.metadata["epoch"] = std::to_string(c.epoch);
    state.metadata["step"] = std::to_string(c.step);
    write_safetensors((tmp / "model.safetensors").string(), c.model);
    write_safetensors((tmp / "state.safetensors").string(), state);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    throw CheckpointError(std::string("writing checkpoint: ") + e.what());
  }
  detail::sync_directory(tmp);
  // A directory of this name that `latest` does not point to is left over (a run resumed
  // from an earlier checkpoint): replace it.
  if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    throw CheckpointError(final_dir.string() + ": cannot move the new checkpoint into place");
  }
  detail::sync_directory(root);
  // `latest` is replaced by rename, so it always names a complete checkpoint.
  try {
    detail::write_file_atomically(root / "latest", name + "\n");
  } catch (const detail::AtomicWriteError& e) {
    throw CheckpointError((root / "latest").string() + ": cannot update: " + e.what());
  }
  // Only the newest checkpoint is kept. Besides the previous one, this removes checkpoints that a
  // process killed between updating `latest` and removing its predecessor left behind, and the
  // temporary directories of processes killed while writing.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string n = entry.path().filename().string();
    if (n == name) continue;
    if (n.find(".tmp-") != std::string::npos || is_checkpoint_dir_name(n)) stale.push_back(entry.path());
  }
  for (const fs::path& p : stale) fs::remove_all(p, ec);
  return final_dir.string();
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::ifstream in(root / "latest");
  std::string name;
  if (!in || !std::getline(in, name) || name.empty()) return std::nullopt;
  return (root / name).string();
}

Checkpoint load_checkpoint(const std::string& path) {
  fs::path dir = path;
  if (!fs::exists(dir / "model.safetensors")) {
    const std::optional<std::string> latest = latest_checkpoint(path);
    if (!fs::is_directory(dir)) throw CheckpointError(path + ": no such checkpoint or run directory");
    if (!latest) throw CheckpointError(path + ": neither a checkpoint (no model.safetensors) nor a run directory with checkpoints/latest");
    dir = *latest;
  }
  Checkpoint c;
  try {
    c.model = read_safetensors((dir / "model.safetensors").string());
    c.state = read_safetensors((dir / "state.safetensors").string());
  } catch (const std::exception& e) {
    throw CheckpointError(e.what());
  }
  const std::string where = (dir / "state.safetensors").string();
  c.epoch = read_number(c.state.metadata, "epoch", where);
  c.step = read_number(c.state.metadata, "step", where);
  return c;
}

TensorFile model_state(Model& model) {
  TensorFile f;
  for (const Parameter* p : model.parameters()) f.tensors[p->name] = p->value;
  for (const Buffer* b : model.buffers()) f.tensors[b->name] = b->value;
  f.metadata["arch"] = model.arch();
  return f;
}

void load_model_state(Model& model, const TensorFile& file) {
  std::set<std::string> used;
  const auto load = [&](const std::string& name, Tensor& dst) {
    const auto it = file.tensors.find(name);
    if (it == file.tensors.end()) throw CheckpointError("checkpoint has no tensor '" + name + "'");
    if (shape_size(it->second.shape()) != dst.size()) {
      throw CheckpointError("checkpoint tensor '" + name + "' has shape " + to_string(it->second.shape()) + ", the model " +
                            to_string(dst.shape()));
    }
    std::copy(it->second.values().begin(), it->second.values().end(), dst.data());
    used.insert(name);
  };
  for (Parameter* p : model.parameters()) load(p->name, p->value);
  for (Buffer* b : model.buffers()) load(b->name, b->value);
  for (const auto& [name, t] : file.tensors) {
    if (!used.count(name)) throw CheckpointError("checkpoint tensor '" + name + "' is not part of model " + model.arch());
  }
}

}  // namespace mpsim
