// `mpsim format FORMAT`: the properties of a number format, optionally every code with its value.
#include <fmt/core.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "mpsim/block.h"
#include "mpsim/format.h"

namespace mpsim::cli {

namespace {

struct FormatOptions {
  std::string format;
  bool table = false;
  bool json = false;
};

const char* class_name(CodeClass k) {
  switch (k) {
    case CodeClass::zero: return "zero";
    case CodeClass::subnormal: return "subnormal";
    case CodeClass::normal: return "normal";
    case CodeClass::infinite: return "inf";
    case CodeClass::nan: return "nan";
  }
  return "?";
}

std::string code_list(const std::vector<std::uint64_t>& codes, int bits) {
  if (codes.empty()) return "none";
  std::string s;
  for (std::size_t i = 0; i < codes.size(); ++i) {
    if (i == 8) {
      s += fmt::format(", ... ({} codes)", codes.size());
      break;
    }
    s += (i ? ", " : "") + hex_code(codes[i], bits);
  }
  return s;
}

std::string pow2(double v) {
  if (v == 0 || !std::isfinite(v)) return "";
  int e;
  const double m = std::frexp(std::fabs(v), &e);
  if (m == 0.5) return fmt::format(" (2^{})", e - 1);
  return "";
}

int run_format(const FormatOptions& o) {
  if (BlockFormat::is_block_format(o.format)) return run_block_format(o.format, o.table, o.json);
  const Format f = Format::parse(o.format);
  const FormatInfo info = describe(f);
  if (o.table && f.bits() > 16) {
    throw UsageError(fmt::format("--table lists formats of at most 16 bits; '{}' has {}", info.name, f.bits()));
  }
  if (o.json) {
    nlohmann::json j;
    j["format"] = info.name;
    j["kind"] = info.kind;
    j["bits"] = info.bits;
    if (info.kind == "float") {
      j["exponent_bits"] = info.exp_bits;
      j["mantissa_bits"] = info.man_bits;
      j["bias"] = info.bias;
      j["emin"] = info.emin;
      j["emax"] = info.emax;
      j["min_normal"] = info.min_normal;
      j["min_subnormal"] = info.min_subnormal;
      j["has_subnormals"] = info.has_subnormals;
      j["has_inf"] = info.has_inf;
      j["has_nan"] = info.has_nan;
      j["has_negative_zero"] = info.has_neg_zero;
      j["inf_codes"] = info.inf_codes;
      j["nan_codes"] = info.nan_codes;
    } else {
      j["step"] = info.step;
    }
    j["precision_bits"] = info.precision;
    j["max_finite"] = info.max_finite;
    j["min_finite"] = info.min_finite;
    j["unit_roundoff"] = info.unit_roundoff;
    j["dynamic_range_decades"] = info.dynamic_range_decades;
    j["subnormals"] = info.subnormals;
    j["specials"] = info.specials;
    j["overflow"] = info.overflow;
    j["rounding"] = to_string(f.rounding());
    if (o.table) {
      auto& rows = j["codes"] = nlohmann::json::array();
      for (std::uint64_t c = 0; c < code_count(f); ++c) {
        const CodeValue v = decode(f, c);
        rows.push_back({{"code", c}, {"value", jnum(v.value)}, {"class", class_name(v.klass)}});
      }
    }
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  auto line = [](const char* key, const std::string& value) { fmt::print("{:<15}{}\n", key, value); };
  line("format", info.name);
  if (info.kind == "float") {
    const auto& s = f.float_spec();
    line("kind", fmt::format("float, {} bits: {}{} exponent, {} mantissa{}", info.bits, s.is_signed ? "sign, " : "unsigned, ",
                             info.exp_bits, info.man_bits, s.radix_log2 == 2 ? ", radix 4" : ""));
    line("bias", std::to_string(info.bias));
    line("precision", fmt::format("{} significant bits", info.precision));
    line("exponents", fmt::format("{} .. {} (min normal .. max finite)", info.emin, info.emax));
    line("max finite", num(info.max_finite) + pow2(info.max_finite));
    line("min normal", num(info.min_normal) + pow2(info.min_normal));
    line("min subnormal", info.has_subnormals ? num(info.min_subnormal) + pow2(info.min_subnormal) : "none");
  } else {
    line("kind", fmt::format("{}, {} bits", info.kind, info.bits));
    line("step", num(info.step) + pow2(info.step));
    line("max", num(info.max_finite));
    line("min", num(info.min_finite));
    if (info.kind == "integer") {
      const auto& s = f.int_spec();
      line("scale", num(s.scale));
      line("zero point", std::to_string(s.zp));
      if (s.perchannel) line("per channel", "yes: layers supply one scale per output channel");
    }
  }
  line("unit roundoff", num(info.unit_roundoff) + pow2(info.unit_roundoff) + (info.kind == "float" ? "" : " (absolute)"));
  line("dynamic range", fmt::format("{:.2f} decades", info.dynamic_range_decades));
  line("subnormals", info.subnormals);
  line("specials", info.specials);
  if (info.kind == "float") {
    line("inf codes", f.bits() <= 16 ? code_list(info.inf_codes, info.bits) : (info.has_inf ? "all-ones exponent, mantissa 0" : "none"));
    line("nan codes", f.bits() <= 16 ? code_list(info.nan_codes, info.bits) : (info.has_nan ? "all-ones exponent, mantissa != 0" : "none"));
  }
  line("overflow", info.overflow);
  line("rounding", to_string(f.rounding()));
  if (o.table) {
    fmt::print("\n{:<10}{:<26}{}\n", "code", "value", "class");
    for (std::uint64_t c = 0; c < code_count(f); ++c) {
      const CodeValue v = decode(f, c);
      fmt::print("{:<10}{:<26}{}\n", hex_code(c, info.bits), num(v.value), class_name(v.klass));
    }
  }
  return kOk;
}

}  // namespace

Runner add_format_command(CLI::App& app) {
  auto o = std::make_shared<FormatOptions>();
  auto* cmd = app.add_subcommand("format", "Show a number format: bits, bias, range, unit roundoff, special codes.");
  cmd->footer(
      "Examples:\n"
      "  mpsim format e5m2:cfg5\n"
      "  mpsim format e4m3fn --table\n"
      "  mpsim format q8.13 --json\n"
      "  mpsim format hbfp6/64\n"
      "  mpsim format mxfp4 --table\n"
      "Format grammar: docs/formats.md (floats eXmY and presets with :cfgN, :sub=, :sp=, :sat, :bias=;\n"
      "fixed point qI.F / uqI.F with :sat or :wrap; intN / uintN with :scale=, :zp=, :perchannel;\n"
      "a rounding mode after '@': rne rna rz ru rd ro sr srN hyst; block formats hbfpK/N, mxfp8_e4m3,\n"
      "mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8, nvfp4 with :exp=W, :rule=max|floor|ceil, :tile).");
  cmd->add_option("format", o->format, "Format string, e.g. e4m3fn, bf16, e5m2:cfg5, q8.13, int8:scale=0.5")->required();
  cmd->add_flag("--table", o->table, "List every code with its value (formats of at most 16 bits)");
  cmd->add_flag("--json", o->json, "Machine-readable output");
  return [o] { return run_format(*o); };
}

}  // namespace mpsim::cli
