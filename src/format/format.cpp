// The format grammar: parsing (case-insensitive, strict) and canonical printing.
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "float_geometry.h"
#include "mpsim/format.h"
#include "text.h"

namespace mpsim {

namespace {

using detail::FloatGeometry;

int default_bias(int exp_bits, Specials sp) {
  // fnuz formats move the bias up by one (the code space of -0 becomes NaN, and the
  // standard's designers used the freed exponent for one more binade at the bottom).
  const int ieee = (1 << (exp_bits - 1)) - 1;
  return sp == Specials::fnuz ? ieee + 1 : ieee;
}

FloatSpec ieee_like(int e, int m, Specials sp = Specials::ieee, Subnormals sub = Subnormals::ieee) {
  FloatSpec s;
  s.exp_bits = e;
  s.man_bits = m;
  s.sp = sp;
  s.sub = sub;
  s.bias = default_bias(e, sp);
  return s;
}

struct Preset {
  const char* name;
  FloatSpec spec;
  bool takes_float_options;  // cfg/sub/sp make sense only for the ordinary IEEE-like layouts
};

std::vector<Preset> make_presets() {
  FloatSpec e8m0 = ieee_like(8, 0, Specials::fn);
  e8m0.is_signed = false;
  e8m0.has_zero = false;
  FloatSpec dl = ieee_like(6, 9, Specials::ext, Subnormals::flushin);
  dl.inf_is_nan = true;
  FloatSpec r4 = ieee_like(3, 0, Specials::none, Subnormals::ieee);
  r4.radix_log2 = 2;
  return {
      {"fp64", ieee_like(11, 52), true},
      {"fp32", ieee_like(8, 23), true},
      {"tf32", ieee_like(8, 10), true},
      {"bf16", ieee_like(8, 7), true},
      {"fp16", ieee_like(5, 10), true},
      {"dlfloat16", dl, false},
      {"e5m2", ieee_like(5, 2), true},
      {"e4m3", ieee_like(4, 3), true},
      {"e4m3fn", ieee_like(4, 3, Specials::fn), true},
      {"e4m3fnuz", ieee_like(4, 3, Specials::fnuz), true},
      {"e5m2fnuz", ieee_like(5, 2, Specials::fnuz), true},
      {"e3m2fn", ieee_like(3, 2, Specials::none), true},
      {"e2m3fn", ieee_like(2, 3, Specials::none), true},
      {"e2m1fn", ieee_like(2, 1, Specials::none), true},
      {"e8m0fnu", e8m0, false},
      {"fp4r4", r4, false},
  };
}

const std::vector<Preset>& presets() {
  static const std::vector<Preset> p = make_presets();
  return p;
}

const char* sub_name(Subnormals s) {
  switch (s) {
    case Subnormals::ieee: return "ieee";
    case Subnormals::flushout: return "flushout";
    case Subnormals::asnormal: return "asnormal";
    case Subnormals::flushin: return "flushin";
  }
  return "?";
}

const char* sp_name(Specials s) {
  switch (s) {
    case Specials::ieee: return "ieee";
    case Specials::fn: return "fn";
    case Specials::fnuz: return "fnuz";
    case Specials::ext: return "ext";
    case Specials::none: return "none";
  }
  return "?";
}

struct CfgVariant {
  int n;
  Specials sp;
  Subnormals sub;
};
// The FPGA multiplier-input variants of the Archimedes-MPO study, as element formats.
// cfg3 differs from cfg1 only in the MAC product (delivered exactly), not as an element format.
constexpr CfgVariant kCfg[] = {
    {1, Specials::ieee, Subnormals::ieee},    {2, Specials::ieee, Subnormals::flushout},
    {3, Specials::ieee, Subnormals::ieee},    {4, Specials::ext, Subnormals::ieee},
    {5, Specials::ext, Subnormals::asnormal}, {6, Specials::ext, Subnormals::flushin},
};

[[noreturn]] void fail(std::string_view whole, const std::string& what) {
  throw FormatError("format '" + std::string(whole) + "': " + what);
}

// Checks that a float format has finite nonzero values and that all of them are fp64 numbers.
void validate_float(std::string_view whole, const FloatSpec& s) {
  if (s.exp_bits < 1 || s.exp_bits > 11) fail(whole, "exponent bits must be 1..11 (fp64 carrier), got " + std::to_string(s.exp_bits));
  if (s.man_bits < 0 || s.man_bits > 52) fail(whole, "mantissa bits must be 0..52 (fp64 carrier), got " + std::to_string(s.man_bits));
  FloatGeometry g(s);
  // Every value must be an fp64 number: the largest below 2^1024, every step at least 2^-1074.
  const int top_exp = s.radix_log2 * (g.top_field - s.bias);
  const int low_exp = g.lowest_step_exp(s);
  if (top_exp > 1023) fail(whole, "bias=" + std::to_string(s.bias) + " puts the largest value at 2^" + std::to_string(top_exp) + ", beyond fp64 (2^1023 is the largest binade)");
  if (low_exp < -1074) fail(whole, "bias=" + std::to_string(s.bias) + " puts the smallest step at 2^" + std::to_string(low_exp) + ", below fp64's 2^-1074");
  if (g.max_code == 0 || (s.has_zero && g.magnitude(s, g.max_code) == 0.0)) fail(whole, "this layout has no finite nonzero value");
}

void validate_fixed(std::string_view whole, const FixedSpec& s) {
  if (s.is_signed && s.int_bits < 1) fail(whole, "qI.F counts the sign bit in I, so I must be at least 1");
  const int mag = s.bits() - (s.is_signed ? 1 : 0);
  if (s.bits() < 1) fail(whole, "a fixed-point format needs at least one bit");
  if (mag > 53) fail(whole, "needs " + std::to_string(mag) + " magnitude bits; the widest carrier (fp64) has 53");
  if (s.frac_bits > 1074) fail(whole, "F > 1074 is below fp64's smallest step");
  if (s.int_bits > 1024) fail(whole, "I > 1024 is beyond fp64's range");
}

Rounding split_rounding(std::string_view whole, std::string& body) {
  const auto at = body.find('@');
  if (at == std::string::npos) return {};
  const std::string mode = body.substr(at + 1);
  body.resize(at);
  if (mode.find('@') != std::string::npos) fail(whole, "more than one '@'");
  try {
    return parse_rounding(mode);
  } catch (const FormatError& e) {
    fail(whole, e.what());
  }
}

Format parse_float(std::string_view whole, const std::string& head, const std::vector<std::string>& opts, Rounding rnd) {
  FloatSpec s;
  bool options_ok = true;
  std::string base = head;
  bool found = false;
  for (const auto& p : presets()) {
    if (head == p.name) {
      s = p.spec;
      options_ok = p.takes_float_options;
      found = true;
    }
  }
  if (!found) {
    // eXmY
    const auto mpos = head.find('m');
    auto e = detail::parse_uint_in(head.substr(1, mpos == std::string::npos ? 0 : mpos - 1), 0, 99);
    auto m = mpos == std::string::npos ? std::nullopt : detail::parse_uint_in(head.substr(mpos + 1), 0, 99);
    if (head.empty() || head[0] != 'e' || !e || !m) {
      fail(whole, "unknown format '" + head + "': expected a preset (fp64, fp32, tf32, bf16, fp16, dlfloat16, e5m2, e4m3, e4m3fn, e4m3fnuz, e5m2fnuz, e3m2fn, e2m3fn, e2m1fn, e8m0fnu, fp4r4), eXmY, qI.F, uqI.F, intN or uintN");
    }
    s = ieee_like(*e, *m);
  }
  std::optional<int> bias;
  std::optional<Specials> sp;
  std::optional<Subnormals> sub;
  int cfg = 0;
  for (const auto& o : opts) {
    auto takes = [&](bool allowed) {
      if (!allowed) fail(whole, "option '" + o + "' does not apply to " + head);
    };
    if (o.rfind("cfg", 0) == 0) {
      takes(options_ok);
      auto n = detail::parse_uint_in(o.substr(3), 1, 6);
      if (!n) fail(whole, "'" + o + "': expected cfg1 .. cfg6");
      if (cfg || sp || sub) fail(whole, "'" + o + "' sets sp= and sub=; give either cfgN or sp=/sub=, once");
      cfg = *n;
      sp = kCfg[cfg - 1].sp;
      sub = kCfg[cfg - 1].sub;
    } else if (o.rfind("sub=", 0) == 0) {
      takes(options_ok);
      if (sub) fail(whole, "'" + o + "': subnormal handling given twice (cfgN sets it too)");
      const std::string v = o.substr(4);
      if (v == "ieee") sub = Subnormals::ieee;
      else if (v == "flushout") sub = Subnormals::flushout;
      else if (v == "asnormal") sub = Subnormals::asnormal;
      else if (v == "flushin") sub = Subnormals::flushin;
      else fail(whole, "'" + o + "': expected sub=ieee, sub=flushout, sub=asnormal or sub=flushin");
    } else if (o.rfind("sp=", 0) == 0) {
      takes(options_ok);
      if (sp) fail(whole, "'" + o + "': special values given twice (cfgN sets them too)");
      const std::string v = o.substr(3);
      if (v == "ieee") sp = Specials::ieee;
      else if (v == "fn") sp = Specials::fn;
      else if (v == "fnuz") sp = Specials::fnuz;
      else if (v == "ext") sp = Specials::ext;
      else if (v == "none") sp = Specials::none;
      else fail(whole, "'" + o + "': expected sp=ieee, sp=fn, sp=fnuz, sp=ext or sp=none");
    } else if (o == "sat") {
      if (s.sat) fail(whole, "'sat' given twice");
      s.sat = true;
    } else if (o.rfind("bias=", 0) == 0) {
      if (bias) fail(whole, "'bias=' given twice");
      auto b = detail::parse_int(o.substr(5));
      if (!b || *b < -2200 || *b > 2200) fail(whole, "'" + o + "': expected bias=INT (an integer)");
      bias = static_cast<int>(*b);
    } else {
      fail(whole, "unknown option '" + o + "' for a float: expected cfg1..cfg6, sub=..., sp=..., sat or bias=INT");
    }
  }
  if (sp) s.sp = *sp;
  if (sub) s.sub = *sub;
  if (sp && !bias) s.bias = default_bias(s.exp_bits, s.sp);
  if (bias) s.bias = *bias;
  if (s.sp == Specials::fnuz && !s.is_signed) fail(whole, "sp=fnuz needs a sign bit");
  validate_float(whole, s);
  return Format::from_float(s, rnd);
}

Format parse_fixed(std::string_view whole, const std::string& head, const std::vector<std::string>& opts, Rounding rnd) {
  FixedSpec s;
  s.is_signed = head[0] == 'q';
  const std::string body = head.substr(s.is_signed ? 1 : 2);
  const auto dot = body.find('.');
  auto i = dot == std::string::npos ? std::nullopt : detail::parse_uint_in(body.substr(0, dot), 0, 100000);
  auto f = dot == std::string::npos ? std::nullopt : detail::parse_uint_in(body.substr(dot + 1), 0, 100000);
  if (!i || !f) fail(whole, "'" + head + "': expected qI.F or uqI.F with unsigned integers I and F");
  s.int_bits = *i;
  s.frac_bits = *f;
  bool seen = false;
  for (const auto& o : opts) {
    if (o != "sat" && o != "wrap") fail(whole, "unknown option '" + o + "' for fixed point: expected sat or wrap");
    if (seen) fail(whole, "give one of sat or wrap, once");
    seen = true;
    s.wrap = o == "wrap";
  }
  validate_fixed(whole, s);
  return Format::from_fixed(s, rnd);
}

Format parse_integer(std::string_view whole, const std::string& head, const std::vector<std::string>& opts, Rounding rnd) {
  IntSpec s;
  s.is_signed = head[0] == 'i';
  auto n = detail::parse_uint_in(head.substr(s.is_signed ? 3 : 4), 1, 32);
  if (!n) fail(whole, "'" + head + "': expected intN or uintN with N from " + (s.is_signed ? "2" : "1") + " to 32");
  if (s.is_signed && *n < 2) fail(whole, "int1 has no room for a sign and a value; use int2 or uint1");
  s.bits = *n;
  const long long lo = s.z_min(), hi = s.z_max();
  bool have_scale = false, have_zp = false;
  for (const auto& o : opts) {
    if (o.rfind("scale=", 0) == 0) {
      if (have_scale) fail(whole, "'scale=' given twice");
      auto v = detail::parse_double(o.substr(6));
      if (!v || !std::isfinite(*v) || *v <= 0) fail(whole, "'" + o + "': expected scale=NUMBER, a positive finite number");
      s.scale = *v;
      have_scale = true;
    } else if (o.rfind("zp=", 0) == 0) {
      if (have_zp) fail(whole, "'zp=' given twice");
      auto v = detail::parse_int(o.substr(3));
      if (!v) fail(whole, "'" + o + "': expected zp=INT, an integer");
      if (*v < lo || *v > hi) fail(whole, "'" + o + "': the zero point must be a code of " + head + " (" + std::to_string(lo) + " .. " + std::to_string(hi) + ")");
      s.zp = *v;
      have_zp = true;
    } else if (o == "perchannel") {
      if (s.perchannel) fail(whole, "'perchannel' given twice");
      s.perchannel = true;
    } else {
      fail(whole, "unknown option '" + o + "' for an integer format: expected scale=NUMBER, zp=INT or perchannel");
    }
  }
  return Format::from_integer(s, rnd);
}

}  // namespace

Format Format::from_float(const FloatSpec& s, Rounding r) {
  Format f;
  f.spec_ = s;
  f.rounding_ = r;
  return f;
}
Format Format::from_fixed(const FixedSpec& s, Rounding r) {
  Format f;
  f.spec_ = s;
  f.rounding_ = r;
  return f;
}
Format Format::from_integer(const IntSpec& s, Rounding r) {
  Format f;
  f.spec_ = s;
  f.rounding_ = r;
  return f;
}

Format Format::with_rounding(Rounding r) const {
  Format f = *this;
  f.rounding_ = r;
  return f;
}

FormatKind Format::kind() const {
  if (std::holds_alternative<FloatSpec>(spec_)) return FormatKind::floating;
  if (std::holds_alternative<FixedSpec>(spec_)) return FormatKind::fixed;
  return FormatKind::integer;
}

int Format::bits() const {
  switch (kind()) {
    case FormatKind::floating: {
      const auto& s = float_spec();
      return (s.is_signed ? 1 : 0) + s.exp_bits + s.man_bits;
    }
    case FormatKind::fixed: return fixed_spec().bits();
    case FormatKind::integer: return int_spec().bits;
  }
  return 0;
}

Format Format::parse(std::string_view raw) {
  if (raw.empty()) throw FormatError("empty format string: expected e.g. fp16, e4m3fn, e5m2:cfg5, q8.13 or int8");
  if (const auto bad = detail::disallowed_character(raw)) fail(raw, *bad);
  std::string body = detail::lowercase(raw);
  const Rounding rnd = split_rounding(raw, body);
  if (detail::spelled_as_block_format(body)) {
    fail(raw, "this is a block format (hbfp, mx, nvfp4), which quantizes whole blocks of a tensor; an element format is expected here (block formats: BlockFormat::parse, docs/formats.md section 11)");
  }
  std::vector<std::string> parts = detail::split(body, ':');
  const std::string head = parts.front();
  parts.erase(parts.begin());
  for (const auto& p : parts) {
    if (p.empty()) fail(raw, "empty option (two ':' in a row or a trailing ':')");
  }
  if (head.empty()) fail(raw, "missing format name before ':'");
  if (head[0] == 'q' || head.rfind("uq", 0) == 0) return parse_fixed(raw, head, parts, rnd);
  if (head.rfind("int", 0) == 0 || head.rfind("uint", 0) == 0) return parse_integer(raw, head, parts, rnd);
  return parse_float(raw, head, parts, rnd);
}

std::string Format::to_string() const {
  std::string out;
  switch (kind()) {
    case FormatKind::floating: {
      FloatSpec s = float_spec();
      const bool sat = s.sat;
      s.sat = false;
      const Preset* exact = nullptr;
      for (const auto& p : presets()) {
        if (p.spec == s) exact = &p;
      }
      if (exact) {
        out = exact->name;
      } else {
        // Special layouts print as their preset name with the options that differ.
        const Preset* base = nullptr;
        for (const auto& p : presets()) {
          if (!p.takes_float_options && p.spec.radix_log2 == s.radix_log2 && p.spec.is_signed == s.is_signed &&
              p.spec.inf_is_nan == s.inf_is_nan && p.spec.exp_bits == s.exp_bits && p.spec.man_bits == s.man_bits &&
              p.spec.sp == s.sp && p.spec.sub == s.sub && p.spec.has_zero == s.has_zero) {
            base = &p;
          }
        }
        if (base) {
          out = base->name;
          if (s.bias != base->spec.bias) out += ":bias=" + std::to_string(s.bias);
        } else {
          out = 'e' + std::to_string(s.exp_bits);
          out += 'm';
          out += std::to_string(s.man_bits);
          const CfgVariant* cfg = nullptr;
          for (const auto& c : kCfg) {
            if (c.n != 1 && c.n != 3 && c.sp == s.sp && c.sub == s.sub) cfg = &c;
          }
          if (cfg) {
            out += ":cfg" + std::to_string(cfg->n);
          } else {
            if (s.sp != Specials::ieee) out += std::string(":sp=") + sp_name(s.sp);
            if (s.sub != Subnormals::ieee) out += std::string(":sub=") + sub_name(s.sub);
          }
          if (s.bias != default_bias(s.exp_bits, s.sp)) out += ":bias=" + std::to_string(s.bias);
        }
      }
      if (sat) out += ":sat";
      break;
    }
    case FormatKind::fixed: {
      const auto& s = fixed_spec();
      out = std::string(s.is_signed ? "q" : "uq") + std::to_string(s.int_bits) + "." + std::to_string(s.frac_bits);
      if (s.wrap) out += ":wrap";
      break;
    }
    case FormatKind::integer: {
      const auto& s = int_spec();
      out = std::string(s.is_signed ? "int" : "uint") + std::to_string(s.bits);
      if (s.scale != 1.0) out += ":scale=" + detail::shortest(s.scale);
      if (s.zp != 0) out += ":zp=" + std::to_string(s.zp);
      if (s.perchannel) out += ":perchannel";
      break;
    }
  }
  if (rounding_ != Rounding{}) {
    out += '@';
    out += mpsim::to_string(rounding_);
  }
  return out;
}

bool Format::fits(Carrier c) const {
  // fp32: 24 significant bits, normal range up to 2^127, subnormal steps down to 2^-149.
  const int p = c == Carrier::fp32 ? 24 : 53;
  const int min_lsb = c == Carrier::fp32 ? -149 : -1074;
  const int max_exp = c == Carrier::fp32 ? 127 : 1023;
  switch (kind()) {
    case FormatKind::floating: {
      const auto& s = float_spec();
      FloatGeometry g(s);
      if (s.man_bits + 1 > p) return false;
      const double mx = g.max_finite(s);
      if (std::ilogb(mx) > max_exp) return false;
      // Every value is a multiple of the format's smallest step and has at most M+1 bits.
      return g.lowest_step_exp(s) >= min_lsb;
    }
    case FormatKind::fixed: {
      const auto& s = fixed_spec();
      const int mag = s.bits() - (s.is_signed ? 1 : 0);
      // Values are K * 2^-F with |K| < 2^mag.
      return mag <= p && -s.frac_bits >= min_lsb && mag - s.frac_bits <= max_exp + 1;
    }
    case FormatKind::integer:
      // Grid points are defined as (z - zp) * scale rounded once to the carrier; any carrier
      // holds them (the rounding is the definition, docs/formats.md "Integers").
      return true;
  }
  return false;
}

void Format::require_fits(Carrier c) const {
  if (fits(c)) return;
  const char* name = c == Carrier::fp32 ? "fp32" : "fp64";
  throw FormatError("format '" + to_string() + "' has values that an " + name + " carrier cannot hold exactly " +
                    (c == Carrier::fp32 ? "(fp32 has 24 significant bits, exponents -149 .. 127); use the fp64 carrier"
                                        : "(fp64 has 53 significant bits)"));
}

}  // namespace mpsim
