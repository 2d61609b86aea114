// `mpsim format` and `mpsim quantize` for block formats (hbfpK/N, the mx formats, nvfp4): the
// descriptor with its element grid relative to the block scale, and the blockwise quantization
// of numbers given as one tensor, through the scalar reference.
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "cli.h"
#include "mpsim/block.h"
#include "mpsim/format.h"

namespace mpsim::cli {

namespace {

// The distinct non-negative finite values of the element format at scale 2^0.
std::vector<double> magnitudes(const Format& e) {
  std::vector<double> v;
  for (std::uint64_t c = 0; c < code_count(e); ++c) {
    const CodeValue cv = decode(e, c);
    if (std::isfinite(cv.value) && cv.value >= 0) v.push_back(cv.value);
  }
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::string family_words(const BlockFormat& f) {
  switch (f.family()) {
    case BlockFamily::hbfp: return "HBFP: block floating point, sign-magnitude elements 0.m sharing one exponent";
    case BlockFamily::mx: return "OCP microscaling (MX v1.0): elements sharing an E8M0-style power-of-two scale";
    case BlockFamily::nvfp4: return "NVFP4: e2m1 elements, an e4m3fn scale per block of 16 and an fp32 scale per tensor";
  }
  return "?";
}

std::string rule_name(const BlockFormat& f) {
  if (f.rule() == ScaleRule::ceil) return "ceil";
  return f.family() == BlockFamily::hbfp ? "max" : "floor";
}

std::string rule_words(const BlockFormat& f) {
  if (f.family() == BlockFamily::nvfp4) return "block scale = e4m3fn(rne, saturating) of amax(block) / 6 / s; s = amax(tensor) / (6 * 448) in fp32";
  if (f.rule() == ScaleRule::ceil) {
    return fmt::format("ceil: the smallest X with amax <= {} * 2^X (never clips before rounding)", num(f.element_max()));
  }
  if (f.family() == BlockFamily::hbfp) return "max: X = floor(log2 amax) + 1 (the exponent of the largest element; amax < 2^X)";
  return fmt::format("floor: X = floor(log2 amax) - {} (OCP MX; may clip the block maximum, which saturates)", f.element_emax());
}

}  // namespace

int run_block_format(const std::string& text, bool table, bool json) {
  const BlockFormat f = BlockFormat::parse(text);
  const Format e = f.element_format();
  const FormatInfo ei = describe(e);
  if (table && e.bits() > 16) throw UsageError(fmt::format("--table lists element grids of at most 16 bits; '{}' has {}", f.to_string(), e.bits()));
  const std::vector<double> grid = e.bits() <= 16 ? magnitudes(e) : std::vector<double>{};
  const std::string bits_words = fmt::format("{} ({} + {}/{})", num(f.bits_per_element()), f.element_bits(), f.scale_bits(), f.block_size());
  if (json) {
    nlohmann::json j;
    j["format"] = f.to_string();
    j["family"] = f.family_name();
    j["block_size"] = f.block_size();
    j["tile"] = f.tile();
    j["element_format"] = e.to_string();
    j["element_bits"] = f.element_bits();
    j["element_max"] = f.element_max();
    j["element_emax"] = f.element_emax();
    j["element_min_positive"] = ei.min_subnormal > 0 ? ei.min_subnormal : ei.min_normal;
    j["scale_bits"] = f.scale_bits();
    if (f.family() != BlockFamily::nvfp4) {
      j["scale_min"] = f.scale_min();
      j["scale_max"] = f.scale_max();
      j["scale_bias"] = f.scale_max();
    }
    j["rule"] = f.family() == BlockFamily::nvfp4 ? "nvfp4" : rule_name(f);
    j["bits_per_element"] = f.bits_per_element();
    j["rounding"] = to_string(f.rounding());
    if (!grid.empty()) j["grid"] = grid;
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  auto line = [](const char* key, const std::string& value) { fmt::print("{:<15}{}\n", key, value); };
  line("format", f.to_string());
  line("family", family_words(f));
  line("block", f.tile() ? fmt::format("{0} x {0} tile ({1} elements) over the last two axes", f.tile(), f.block_size())
                         : fmt::format("{} elements along the reduction axis", f.block_size()));
  std::string ew = fmt::format("{} bits: {} (max {}", f.element_bits(), e.to_string(), num(f.element_max()));
  if (f.family() == BlockFamily::hbfp) ew += fmt::format(", step 2^-{}", f.element_bits() - 1);
  line("element", ew + ")");
  if (f.family() == BlockFamily::nvfp4) {
    line("scale", "e4m3fn per block (8 bits) times one fp32 per tensor");
  } else {
    line("scale", fmt::format("{}-bit exponent X in {} .. {} (code X + {}; code {} is NaN){}", f.scale_bits(), f.scale_min(),
                              f.scale_max(), f.scale_max(), (1 << f.scale_bits()) - 1, f.scale_bits() == 8 ? ", E8M0" : ""));
  }
  line("rule", rule_words(f));
  line("bits/element", bits_words + (f.family() == BlockFamily::nvfp4 ? ", plus one fp32 per tensor" : ""));
  const std::string unit = f.family() == BlockFamily::nvfp4 ? " x s x block scale" : " x 2^X";
  if (!grid.empty()) {
    std::string g;
    if (grid.size() <= 16) {
      for (std::size_t i = 0; i < grid.size(); ++i) g += (i ? ", " : "") + num(grid[i]);
    } else {
      g = fmt::format("{}, {}, {}, ..., {}, {}", num(grid[0]), num(grid[1]), num(grid[2]), num(grid[grid.size() - 2]), num(grid.back()));
    }
    line("grid", fmt::format("+-{{{}}}{} ({} magnitudes)", g, unit, grid.size()));
  }
  line("rounding", to_string(f.rounding()));
  line("nan", "a NaN or infinity in a block makes its scale NaN and every element NaN");
  if (table) {
    fmt::print("\n{:<10}{}\n", "code", "value / scale");
    for (std::uint64_t c = 0; c < code_count(e); ++c) fmt::print("{:<10}{}\n", hex_code(c, e.bits()), num(decode(e, c).value));
  }
  return kOk;
}

namespace {

// The block of each element (row-major block numbering, as BlockScale lists are ordered).
std::vector<std::size_t> block_of_elements(const BlockFormat& f, const BlockLayout& l, std::size_t n) {
  std::vector<std::size_t> b(n);
  const auto& s = l.shape;
  const auto nd = s.size();
  if (f.tile()) {
    const std::size_t T = static_cast<std::size_t>(f.tile()), R = s[nd - 2], C = s[nd - 1];
    const std::size_t tr = (R + T - 1) / T, tc = (C + T - 1) / T;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t m = i / (R * C), r = (i / C) % R, c = i % C;
      b[i] = (m * tr + r / T) * tc + c / T;
    }
    return b;
  }
  const std::size_t a = static_cast<std::size_t>(l.axis < 0 ? l.axis + static_cast<int>(nd) : l.axis);
  std::size_t inner = 1;
  for (std::size_t d = a + 1; d < nd; ++d) inner *= s[d];
  const std::size_t L = s[a], N = static_cast<std::size_t>(f.block_size()), nbl = (L + N - 1) / N;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t o = i / (L * inner), li = (i / inner) % L, in = i % inner;
    b[i] = (o * nbl + li / N) * inner + in;
  }
  return b;
}

}  // namespace

int run_block_quantize(const QuantizeArgs& a) {
  const BlockFormat f = BlockFormat::parse(a.format);
  if (a.carrier != "fp32" && a.carrier != "fp64") throw UsageError("--carrier must be fp32 or fp64, got '" + a.carrier + "'");
  const bool fp32 = a.carrier == "fp32";
  if (fp32) f.require_fits(Carrier::fp32);
  const auto inputs = read_values(a.values, a.file);
  const std::size_t n = inputs.size();
  BlockLayout layout{a.shape.empty() ? std::vector<std::size_t>{n} : a.shape, a.axis};
  std::size_t count = 1;
  for (auto d : layout.shape) count *= d;
  if (count != n) {
    std::string sh;
    for (auto d : layout.shape) sh += (sh.empty() ? "" : ",") + std::to_string(d);
    throw UsageError(fmt::format("--shape {} holds {} values, but {} were given", sh, count, n));
  }
  BlockQuantizeOptions o;
  o.key = {a.seed, a.stream};
  std::vector<double> x(n), y(n);
  std::vector<BlockScale> scales;
  BlockStats st;
  try {
    if (fp32) {
      // As an fp32 tensor would hold them: each decimal read into fp32 first (correctly rounded).
      std::vector<float> xf(n), yf(n);
      for (std::size_t i = 0; i < n; ++i) xf[i] = std::strtof(inputs[i].first.c_str(), nullptr);
      st = quantize_blocks_ref(f, xf.data(), yf.data(), layout, o, &scales);
      for (std::size_t i = 0; i < n; ++i) {
        x[i] = xf[i];
        y[i] = yf[i];
      }
    } else {
      for (std::size_t i = 0; i < n; ++i) x[i] = inputs[i].second;
      st = quantize_blocks_ref(f, x.data(), y.data(), layout, o, &scales);
    }
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  const auto blk = block_of_elements(f, layout, n);
  auto flags = [&](std::size_t i) {
    const BlockScale& s = scales[blk[i]];
    if (s.nan) return std::string("nan-block");
    const double limit = f.family() == BlockFamily::nvfp4 ? 6 * s.value : std::ldexp(f.element_max(), s.exponent);
    if (std::fabs(x[i]) > limit) return std::string("clipped");
    if (x[i] != 0 && y[i] == 0) return std::string("flushed");
    return std::string(y[i] == x[i] ? "exact" : "inexact");
  };
  if (a.json) {
    nlohmann::json vals = nlohmann::json::array(), blocks = nlohmann::json::array();
    for (std::size_t i = 0; i < n; ++i) {
      vals.push_back({{"input", inputs[i].first}, {"input_value", jnum(x[i])}, {"result", jnum(y[i])}, {"block", blk[i]},
                      {"abs_error", jnum(std::fabs(y[i] - x[i]))}, {"flag", flags(i)}});
    }
    for (const auto& s : scales) {
      blocks.push_back({{"exponent", s.exponent}, {"code", s.code}, {"scale", jnum(s.value)}, {"nan", s.nan}});
    }
    nlohmann::json j{{"format", f.to_string()}, {"carrier", a.carrier}, {"seed", a.seed}, {"stream", a.stream},
                     {"shape", layout.shape}, {"axis", f.tile() ? -1 : a.axis}, {"values", vals}, {"blocks", blocks},
                     {"stats",
                      {{"blocks", st.blocks}, {"zero_blocks", st.zero_blocks}, {"nan_blocks", st.nan_blocks},
                       {"clipped", st.clipped}, {"flushed", st.flushed}, {"scale_clamped", st.scale_clamped}}}};
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  fmt::print("{:<24}{:<24}{:<8}{:<14}{}\n", "input", "result", "block", "abs error", "flag");
  for (std::size_t i = 0; i < n; ++i) {
    fmt::print("{:<24}{:<24}{:<8}{:<14}{}\n", num(x[i]), num(y[i]), blk[i], fmt::format("{:.6g}", std::fabs(y[i] - x[i])), flags(i));
  }
  fmt::print("\n{:<8}{:<10}{:<8}{}\n", "block", "exponent", "code", "scale");
  for (std::size_t b = 0; b < scales.size(); ++b) {
    const auto& s = scales[b];
    fmt::print("{:<8}{:<10}{:<8}{}\n", b, s.nan ? "nan" : std::to_string(s.exponent), hex_code(s.code, f.family() == BlockFamily::nvfp4 ? 8 : f.scale_bits()),
               num(s.value));
  }
  fmt::print("\n{}: {} blocks ({} zero, {} NaN); {} clipped, {} flushed to zero, {} scales clamped; {:.4g} bits per element\n",
             f.to_string(), st.blocks, st.zero_blocks, st.nan_blocks, st.clipped, st.flushed, st.scale_clamped, f.bits_per_element());
  return kOk;
}

}  // namespace mpsim::cli
