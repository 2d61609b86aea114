// `mpsim quantize FORMAT VALUES...`: round numbers into a format and show code and error.
#include <fmt/core.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "mpsim/block.h"
#include "mpsim/format.h"
#include "mpsim/quantize.h"

namespace mpsim::cli {

namespace {

std::string flag_words(const QuantFlags& f) {
  std::string s;
  auto add = [&](bool on, const char* w) {
    if (on) s += (s.empty() ? "" : ",") + std::string(w);
  };
  add(f.nan_input, "nan-input");
  add(f.overflow, "overflow");
  add(f.saturated, "saturated");
  add(f.underflow, "underflow");
  add(f.nan_result && !f.nan_input, "nan");
  add(f.inexact, "inexact");
  return s.empty() ? "exact" : s;
}

std::string num_g(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : num(v); }

int run_quantize(const QuantizeArgs& o) {
  if (BlockFormat::is_block_format(o.format)) {
    return run_block_quantize(o);
  }
  if (!o.shape.empty() || o.axis != -1) throw UsageError("--shape and --axis apply to block formats only");
  const Format f = Format::parse(o.format);
  if (f.kind() == FormatKind::integer && f.int_spec().perchannel) {
    throw UsageError("'perchannel' formats take their scales from a tensor's channels; mpsim quantize rounds scalars — drop ':perchannel' and give ':scale='");
  }
  if (f.rounding().mode == RoundMode::hyst) {
    throw UsageError("'hyst' rounding keeps a previous value and applies to weight updates in training; mpsim quantize has no previous value");
  }
  if (o.carrier != "fp32" && o.carrier != "fp64") throw UsageError("--carrier must be fp32 or fp64, got '" + o.carrier + "'");
  const bool fp32 = o.carrier == "fp32";
  if (fp32) f.require_fits(Carrier::fp32);
  const auto inputs = read_values(o.values, o.file);
  const RandomKey key{o.seed, o.stream};
  nlohmann::json rows = nlohmann::json::array();
  if (!o.json) fmt::print("{:<24}{:<24}{:<10}{:<14}{:<14}{}\n", "input", "result", "code", "abs error", "rel error", "flags");
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    // fp32 carrier: the decimal is read into fp32 first (correctly rounded), as an fp32 tensor would hold it.
    const double x = fp32 ? static_cast<double>(std::strtof(inputs[i].first.c_str(), nullptr)) : inputs[i].second;
    QuantResult r = quantize_ref(x, f, i, key);
    // The code does not depend on the carrier; look it up from the fp64 result.
    const double value64 = r.value;
    if (fp32 && f.kind() == FormatKind::integer) {
      r.value = quantize(static_cast<float>(x), f, i, key);
      r.flags.inexact = !(r.value == x);
    }
    std::string code;
    try {
      code = hex_code(encode(f, value64), f.bits());
    } catch (const FormatError&) {
      code = "none";  // NaN in a format without a NaN code: the carrier holds NaN, no code exists
    }
    const double abs_err = std::fabs(r.value - x);
    double rel_err = x != 0 ? abs_err / std::fabs(x) : (r.value == 0 ? 0.0 : INFINITY);
    if (std::isnan(rel_err)) rel_err = NAN;  // print "nan", never "-nan"
    if (o.json) {
      rows.push_back({{"input", inputs[i].first}, {"input_value", jnum(x)}, {"result", jnum(r.value)}, {"code", code},
                      {"abs_error", jnum(abs_err)}, {"rel_error", jnum(rel_err)},
                      {"flags", {{"inexact", r.flags.inexact}, {"overflow", r.flags.overflow}, {"saturated", r.flags.saturated},
                                 {"underflow", r.flags.underflow}, {"nan_input", r.flags.nan_input}, {"nan_result", r.flags.nan_result}}}});
    } else {
      fmt::print("{:<24}{:<24}{:<10}{:<14}{:<14}{}\n", num(x), num(r.value), code, num_g(abs_err), num_g(rel_err),
                 flag_words(r.flags));
    }
  }
  if (o.json) {
    nlohmann::json j{{"format", f.to_string()}, {"carrier", o.carrier}, {"seed", o.seed}, {"stream", o.stream}, {"values", rows}};
    std::cout << j.dump(2) << "\n";
  }
  return kOk;
}

}  // namespace

Runner add_quantize_command(CLI::App& app) {
  auto o = std::make_shared<QuantizeArgs>();
  auto* cmd = app.add_subcommand("quantize", "Round numbers into a format; print result, code, absolute and relative error.");
  cmd->footer(
      "Examples:\n"
      "  mpsim quantize e4m3fn@rne 0.3 1e9 -2.5e-5 nan\n"
      "  mpsim quantize e5m2@sr --seed 7 0.3 0.3 0.3\n"
      "  mpsim quantize q8.13:wrap@rz --file values.txt --json\n"
      "  mpsim quantize hbfp4/16 0.3 -0.7 0.85 0.05\n"
      "  mpsim quantize mxfp4@sr --file acts.txt --shape 64,32 --axis 0\n"
      "Numbers are parsed to fp64 and rounded once into the format (with --carrier fp32 they are\n"
      "first read into fp32). Stochastic modes draw the bits of value i (counting from 0) from the\n"
      "counter-based generator keyed by (--seed, --stream, i).\n"
      "Block formats (hbfpK/N, mx*, nvfp4) quantize the values as one tensor: consecutive blocks\n"
      "by default, or the blocks of --shape along --axis (T x T tiles over the last two axes for\n"
      ":tile); the last block of a run is padded with zeros.");
  cmd->add_option("format", o->format, "Format string with an optional rounding mode, e.g. e4m3fn@rne")->required();
  cmd->add_option("values", o->values, "Numbers to round (decimal, hex float, inf, nan)");
  cmd->add_option("--file", o->file, "Read numbers from FILE, one per line ('#' comments and blank lines skipped)");
  cmd->add_flag("--json", o->json, "Machine-readable output");
  cmd->add_option("--seed", o->seed, "Seed of stochastic rounding")->default_val(0);
  cmd->add_option("--stream", o->stream, "Stream of stochastic rounding")->default_val(0);
  cmd->add_option("--carrier", o->carrier, "Carrier of inputs and results: fp64 or fp32")->default_val("fp64");
  cmd->add_option("--shape", o->shape, "Block formats: the tensor's shape, e.g. 64,32 (default: one axis)")->delimiter(',');
  cmd->add_option("--axis", o->axis, "Block formats: the axis the blocks run along (default -1, the last)");
  return [o] { return run_quantize(*o); };
}

}  // namespace mpsim::cli
