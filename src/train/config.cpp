// The one table of configuration keys and the TOML reading and writing around it.
#include "mpsim/config.h"

#include <toml++/toml.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "mpsim/mac.h"

namespace mpsim {

namespace {

enum class Kind { string, integer, unsigned_integer, floating, boolean, integer_list, character };

struct KeyDef {
  const char* key;
  Kind kind;
  const char* help;
  // Reads the value from the config as TOML text; writes it from a TOML node (throws a message).
  std::function<void(TrainConfig&, const toml::node&)> set;
  std::function<std::string(const TrainConfig&)> get;
};

std::string kind_name(Kind k) {
  switch (k) {
    case Kind::string: return "string";
    case Kind::integer: return "integer";
    case Kind::unsigned_integer: return "integer >= 0";
    case Kind::floating: return "float";
    case Kind::boolean: return "bool";
    case Kind::integer_list: return "list of integers >= 0";
    case Kind::character: return "string (one letter)";
  }
  return "?";
}

[[noreturn]] void type_error(Kind k) { throw std::runtime_error("expected " + kind_name(k)); }

// A TOML basic string: "..." with \\, \" and control characters escaped.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// The shortest decimal that reads back to the same double, always with a '.' or an exponent so
// that TOML reads a float (0.1, 1.0, 5e-04 -> "0.0005").
std::string fmt_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string out(buf, r.ptr);
  if (out.find_first_of(".eE") == std::string::npos) out += ".0";
  return out;
}

std::int64_t read_int(const toml::node& n) {
  if (auto v = n.value_exact<std::int64_t>()) return *v;
  type_error(Kind::integer);
}

std::uint64_t read_uint(const toml::node& n) {
  const std::int64_t v = read_int(n);
  if (v < 0) throw std::runtime_error("expected an integer >= 0, got " + std::to_string(v));
  return static_cast<std::uint64_t>(v);
}

double read_double(const toml::node& n) {
  if (auto v = n.value_exact<double>()) return *v;
  if (auto i = n.value_exact<std::int64_t>()) return static_cast<double>(*i);
  type_error(Kind::floating);
}

#define MPSIM_STR(k, field, help)                                                                         \
  KeyDef{k, Kind::string, help,                                                                           \
         [](TrainConfig& c, const toml::node& n) {                                                        \
           if (auto v = n.value_exact<std::string>()) c.field = *v;                                       \
           else type_error(Kind::string);                                                                 \
         },                                                                                               \
         [](const TrainConfig& c) { return quote(c.field); }}
#define MPSIM_UINT(k, field, help)                                                                           \
  KeyDef{k, Kind::unsigned_integer, help,                                                                    \
         [](TrainConfig& c, const toml::node& n) { c.field = static_cast<decltype(c.field)>(read_uint(n)); }, \
         [](const TrainConfig& c) { return std::to_string(c.field); }}
#define MPSIM_DBL(k, field, help)                                                                 \
  KeyDef{k, Kind::floating, help, [](TrainConfig& c, const toml::node& n) { c.field = read_double(n); }, \
         [](const TrainConfig& c) { return fmt_double(c.field); }}
#define MPSIM_BOOL(k, field, help)                                                                \
  KeyDef{k, Kind::boolean, help,                                                                  \
         [](TrainConfig& c, const toml::node& n) {                                                \
           if (auto v = n.value_exact<bool>()) c.field = *v;                                      \
           else type_error(Kind::boolean);                                                        \
         },                                                                                       \
         [](const TrainConfig& c) { return std::string(c.field ? "true" : "false"); }}

std::vector<std::size_t> read_uint_list(const toml::node& n) {
  const toml::array* a = n.as_array();
  if (!a) type_error(Kind::integer_list);
  std::vector<std::size_t> out;
  for (const toml::node& e : *a) out.push_back(static_cast<std::size_t>(read_uint(e)));
  return out;
}

std::string write_uint_list(const std::vector<std::size_t>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

const std::vector<KeyDef>& key_table() {
  static const std::vector<KeyDef> keys = {
      MPSIM_STR("run.name", name, "name of the run directory (created under run.out_dir)"),
      MPSIM_STR("run.out_dir", out_dir, "folder that holds run directories"),
      MPSIM_UINT("run.seed", seed, "seed of every random choice: initialization, shuffling, augmentation, dropout, stochastic rounding"),
      KeyDef{"run.threads", Kind::integer, "threads (0: all cores); results under a bit-accurate MAC do not depend on it (fp32 and qfp32 do)",
             [](TrainConfig& c, const toml::node& n) {
               const std::int64_t v = read_int(n);
               if (v < 0 || v > 1024) throw std::runtime_error("expected 0 .. 1024");
               c.threads = static_cast<int>(v);
             },
             [](const TrainConfig& c) { return std::to_string(c.threads); }},
      MPSIM_STR("data.dataset", dataset, "fashion-mnist, mnist, cifar10 or cifar100"),
      MPSIM_STR("data.path", data_path, "folder of the data files (empty: the data set's default; fashion-mnist: /usr/share/datasets/fashion-mnist)"),
      MPSIM_UINT("data.train_subset", train_subset, "use the first N training samples (0: all)"),
      MPSIM_UINT("data.test_subset", test_subset, "use the first N test samples (0: all)"),
      MPSIM_BOOL("data.normalize", normalize, "subtract the training set's per-channel mean and divide by its standard deviation"),
      MPSIM_UINT("data.crop_padding", crop_padding, "random crop after zero padding by this many pixels (0: off)"),
      MPSIM_BOOL("data.flip", flip, "random horizontal flip"),
      MPSIM_UINT("data.batch_size", batch_size, "training batch size"),
      MPSIM_UINT("data.eval_batch_size", eval_batch_size, "evaluation batch size"),
      MPSIM_STR("model.arch", model.arch, "mlp, lenet5, resnet20, resnet32, resnet44, resnet56, resnet110, vgg11 or vgg16"),
      KeyDef{"model.shortcut", Kind::character, "ResNet shortcut option: \"A\" (parameter-free) or \"B\" (1x1 conv + BN)",
             [](TrainConfig& c, const toml::node& n) {
               auto v = n.value_exact<std::string>();
               if (!v || v->size() != 1) type_error(Kind::character);
               c.model.shortcut = static_cast<char>(std::toupper(static_cast<unsigned char>((*v)[0])));
             },
             [](const TrainConfig& c) { return quote(std::string(1, c.model.shortcut)); }},
      KeyDef{"model.hidden", Kind::integer_list, "MLP hidden widths",
             [](TrainConfig& c, const toml::node& n) { c.model.hidden = read_uint_list(n); },
             [](const TrainConfig& c) { return write_uint_list(c.model.hidden); }},
      KeyDef{"model.dropout", Kind::floating, "dropout probability before the classifier layers (MLP, LeNet-5, VGG)",
             [](TrainConfig& c, const toml::node& n) { c.model.dropout = static_cast<float>(read_double(n)); },
             [](const TrainConfig& c) { return fmt_double(c.model.dropout); }},
      MPSIM_STR("precision.mac", mac, "\"fp32\" (plain FP32 through OpenBLAS), a MAC spec (block formats too: \"in=mxfp8_e4m3\"), or \"qfp32 in=F\" (operands rounded, then OpenBLAS) for all three GEMMs of every layer"),
      MPSIM_STR("precision.fwd", fwd, "MAC spec of the forward GEMMs (empty: precision.mac)"),
      MPSIM_STR("precision.bwd", bwd, "MAC spec of the data-gradient GEMMs (empty: precision.mac)"),
      MPSIM_STR("precision.grad", grad, "MAC spec of the weight- and bias-gradient GEMMs (empty: precision.mac)"),
      MPSIM_STR("optim.name", optimizer, "sgd, adam or adamw"),
      MPSIM_DBL("optim.lr", lr, "base learning rate"),
      MPSIM_DBL("optim.momentum", momentum, "SGD momentum"),
      MPSIM_DBL("optim.dampening", dampening, "SGD dampening"),
      MPSIM_BOOL("optim.nesterov", nesterov, "SGD Nesterov momentum"),
      MPSIM_DBL("optim.weight_decay", weight_decay, "L2 penalty (sgd, adam) or decoupled decay (adamw)"),
      MPSIM_DBL("optim.beta1", beta1, "Adam beta1"),
      MPSIM_DBL("optim.beta2", beta2, "Adam beta2"),
      MPSIM_DBL("optim.eps", eps, "Adam epsilon"),
      MPSIM_STR("schedule.name", schedule, "constant, step, multistep or cosine"),
      MPSIM_UINT("schedule.step_size", step_size, "step: epochs between decays"),
      KeyDef{"schedule.milestones", Kind::integer_list, "multistep: epochs at which lr is multiplied by gamma",
             [](TrainConfig& c, const toml::node& n) { c.milestones = read_uint_list(n); },
             [](const TrainConfig& c) { return write_uint_list(c.milestones); }},
      MPSIM_DBL("schedule.gamma", gamma, "step / multistep decay factor"),
      MPSIM_DBL("schedule.eta_min", eta_min, "cosine: final learning rate"),
      MPSIM_DBL("schedule.warmup_epochs", warmup_epochs, "linear warm-up length in epochs (0: none)"),
      MPSIM_DBL("schedule.warmup_start", warmup_start, "warm-up starts at this fraction of lr"),
      MPSIM_UINT("train.epochs", epochs, "number of epochs"),
      MPSIM_DBL("train.label_smoothing", label_smoothing, "cross-entropy label smoothing"),
      MPSIM_UINT("train.max_steps", max_steps, "stop after this many training steps in all (0: no limit)"),
      MPSIM_UINT("train.checkpoint_every", checkpoint_every, "epochs between checkpoints (0: only at the end)"),
  };
  return keys;
}

#undef MPSIM_STR
#undef MPSIM_UINT
#undef MPSIM_DBL
#undef MPSIM_BOOL

const KeyDef* find_key(const std::string& key) {
  for (const KeyDef& k : key_table()) {
    if (key == k.key) return &k;
  }
  return nullptr;
}

std::string where(const std::string& source, const toml::source_region& r) {
  return source + ":" + std::to_string(r.begin.line);
}

void set_key(TrainConfig& c, const KeyDef& k, const toml::node& n, const std::string& at) {
  try {
    k.set(c, n);
  } catch (const std::runtime_error& e) {
    throw ConfigError(at + ": " + k.key + ": " + e.what());
  }
}

// Visits every leaf of a parsed document; tables are sections, anything else a key.
void apply_table(TrainConfig& c, const toml::table& t, const std::string& prefix, const std::string& source) {
  for (const auto& [name, node] : t) {
    const std::string key = prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
    const KeyDef* k = find_key(key);
    if (k == nullptr && node.is_table()) {
      apply_table(c, *node.as_table(), key, source);
      continue;
    }
    if (k == nullptr) throw ConfigError(where(source, node.source()) + ": unknown key '" + key + "'");
    set_key(c, *k, node, where(source, node.source()));
  }
}

}  // namespace

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> out;
    const TrainConfig defaults;
    for (const KeyDef& k : key_table()) out.push_back({k.key, kind_name(k.kind), k.get(defaults), k.help});
    return out;
  }();
  return keys;
}

TrainConfig parse_config(const std::string& text, const std::string& source) {
  TrainConfig c;
  toml::table doc;
  try {
    doc = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(where(source, e.source()) + ": " + std::string(e.description()));
  }
  apply_table(c, doc, "", source);
  return c;
}

TrainConfig load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open the configuration file");
  std::ostringstream s;
  s << in.rdbuf();
  return parse_config(s.str(), path);
}

void apply_override(TrainConfig& c, const std::string& assignment) {
  const std::size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError("command line: '" + assignment + "' is not key=value");
  }
  const std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  const KeyDef* k = find_key(key);
  if (k == nullptr) throw ConfigError("command line: unknown key '" + key + "'");
  // A TOML value when it reads as one, else the bare text as a string.
  toml::table doc;
  try {
    doc = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    doc = toml::table{{"v", value}};
  }
  const toml::node* n = doc.get("v");
  if (k->kind == Kind::string && !n->is_string()) doc = toml::table{{"v", value}}, n = doc.get("v");
  set_key(c, *k, *n, "command line");
}

void validate(const TrainConfig& c) {
  const auto fail = [](const std::string& key, const std::string& what) { throw ConfigError(key + ": " + what); };
  static const std::set<std::string> datasets = {"fashion-mnist", "mnist", "cifar10", "cifar100"};
  if (!datasets.count(c.dataset)) fail("data.dataset", "unknown data set '" + c.dataset + "' (fashion-mnist, mnist, cifar10, cifar100)");
  if (c.batch_size == 0) fail("data.batch_size", "must be at least 1");
  if (c.eval_batch_size == 0) fail("data.eval_batch_size", "must be at least 1");
  bool arch_known = false;
  for (const std::string& n : model_names()) arch_known = arch_known || n == c.model.arch;
  if (!arch_known) fail("model.arch", "unknown model '" + c.model.arch + "'");
  if (c.model.shortcut != 'A' && c.model.shortcut != 'B') fail("model.shortcut", "must be \"A\" or \"B\"");
  if (!(c.model.dropout >= 0 && c.model.dropout < 1)) fail("model.dropout", "must be in [0, 1)");
  gemm_precision(c);  // every spec parses
  if (c.optimizer != "sgd" && c.optimizer != "adam" && c.optimizer != "adamw") {
    fail("optim.name", "unknown optimizer '" + c.optimizer + "' (sgd, adam, adamw)");
  }
  if (!(c.lr >= 0) || !std::isfinite(c.lr)) fail("optim.lr", "must be a finite number >= 0");
  if (!(c.momentum >= 0 && c.momentum < 1)) fail("optim.momentum", "must be in [0, 1)");
  if (c.nesterov && (c.momentum <= 0 || c.dampening != 0)) fail("optim.nesterov", "needs momentum > 0 and dampening = 0");
  if (!(c.weight_decay >= 0)) fail("optim.weight_decay", "must be >= 0");
  if (!(c.beta1 >= 0 && c.beta1 < 1)) fail("optim.beta1", "must be in [0, 1)");
  if (!(c.beta2 >= 0 && c.beta2 < 1)) fail("optim.beta2", "must be in [0, 1)");
  if (!(c.eps > 0)) fail("optim.eps", "must be > 0");
  static const std::set<std::string> schedules = {"constant", "step", "multistep", "cosine"};
  if (!schedules.count(c.schedule)) fail("schedule.name", "unknown schedule '" + c.schedule + "' (constant, step, multistep, cosine)");
  if (c.schedule == "step" && c.step_size == 0) fail("schedule.step_size", "must be at least 1");
  for (std::size_t i = 1; i < c.milestones.size(); ++i) {
    if (c.milestones[i] <= c.milestones[i - 1]) fail("schedule.milestones", "must increase");
  }
  if (!(c.gamma > 0)) fail("schedule.gamma", "must be > 0");
  if (!(c.warmup_epochs >= 0)) fail("schedule.warmup_epochs", "must be >= 0");
  if (!(c.warmup_start > 0 && c.warmup_start <= 1)) fail("schedule.warmup_start", "must be in (0, 1]");
  if (c.epochs == 0) fail("train.epochs", "must be at least 1");
  if (!(c.label_smoothing >= 0 && c.label_smoothing < 1)) fail("train.label_smoothing", "must be in [0, 1)");
}

std::string to_toml(const TrainConfig& c) {
  std::string out, section;
  for (const KeyDef& k : key_table()) {
    const std::string key = k.key;
    const std::size_t dot = key.find('.');
    const std::string s = key.substr(0, dot);
    if (s != section) {
      if (!section.empty()) out += '\n';
      out.append("[").append(s).append("]\n");
      section = s;
    }
    out.append(key, dot + 1).append(" = ").append(k.get(c)).append("\n");
  }
  return out;
}

GemmPrecision gemm_precision(const TrainConfig& c) {
  const auto spec = [](const std::string& key, const std::string& text) -> std::optional<MacSpec> {
    if (text == "fp32") return std::nullopt;
    try {
      return MacSpec::parse(text);
    } catch (const FormatError& e) {
      throw ConfigError(key + ": " + e.what());
    }
  };
  const std::optional<MacSpec> all = spec("precision.mac", c.mac);
  GemmPrecision p;
  p.fwd = c.fwd.empty() ? all : spec("precision.fwd", c.fwd);
  p.bwd = c.bwd.empty() ? all : spec("precision.bwd", c.bwd);
  p.grad = c.grad.empty() ? all : spec("precision.grad", c.grad);
  return p;
}

bool operator==(const TrainConfig& a, const TrainConfig& b) { return to_toml(a) == to_toml(b); }

}  // namespace mpsim
