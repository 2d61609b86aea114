// The block-format descriptor: grammar, canonical printing and derived properties
// (docs/formats.md §11). Rounding into blocks is in block_ref.cpp and block_quantize.cpp.
#include <cmath>
#include <string>
#include <vector>

#include "mpsim/block.h"
#include "text.h"

namespace mpsim {

namespace {

[[noreturn]] void fail(std::string_view whole, const std::string& what) {
  throw FormatError("block format '" + std::string(whole) + "': " + what);
}

// An OCP MX v1.0 element type: its name, the element format at scale 2^0, and its emax.
struct MxElement {
  const char* name;
  const char* element;  // element format string at scale exponent 0 (saturating)
  int bits;
};

constexpr MxElement kMx[] = {
    {"mxfp8_e4m3", "e4m3fn:sat", 8}, {"mxfp8_e5m2", "e5m2:sat", 8},   {"mxfp6_e3m2", "e3m2fn:sat", 6},
    {"mxfp6_e2m3", "e2m3fn:sat", 6}, {"mxfp4", "e2m1fn:sat", 4},      {"mxint8", "int8:scale=0.015625", 8},
};

// Widest shared exponent: with W <= 10 the scale exponent stays within [-511, 511], so every
// element grid 2^X * {element values} is made of fp64 numbers and the reference can round
// into it directly (see element_format_at).
constexpr int kMaxScaleBits = 10;
constexpr int kMaxBlock = 1 << 20;


int isqrt_exact(int n) {
  const int t = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n))));
  return t * t == n ? t : 0;
}

}  // namespace

bool BlockFormat::is_block_format(std::string_view text) { return detail::spelled_as_block_format(text); }

BlockFormat BlockFormat::parse(std::string_view raw) {
  if (raw.empty()) fail(raw, "empty string");
  if (const auto bad = detail::disallowed_character(raw)) fail(raw, *bad);
  std::string body = detail::lowercase(raw);
  BlockFormat f;
  if (const auto at = body.find('@'); at != std::string::npos) {
    const std::string mode = body.substr(at + 1);
    body.resize(at);
    if (mode.find('@') != std::string::npos) fail(raw, "more than one '@'");
    try {
      f.rounding_ = parse_rounding(mode);
    } catch (const FormatError& e) {
      fail(raw, e.what());
    }
    if (f.rounding_.mode == RoundMode::hyst) {
      fail(raw, "'hyst' rounding applies to weight updates of element formats, not to block formats");
    }
  }
  std::vector<std::string> parts = detail::split(body, ':');
  const std::string head = parts.front();
  parts.erase(parts.begin());

  if (head.rfind("hbfp", 0) == 0) {
    const auto slash = head.find('/');
    if (slash == std::string::npos) fail(raw, "expected hbfpK/N (element bits K including the sign, block size N), e.g. hbfp6/64");
    const auto k = detail::parse_uint_in(head.substr(4, slash - 4), 0, 1000000);
    if (!k) fail(raw, "'" + head.substr(4, slash - 4) + "' is not an element width: expected hbfpK/N, e.g. hbfp6/64");
    if (*k < 2 || *k > 54) fail(raw, "HBFP elements need 2..54 bits (sign + up to 53 magnitude bits, fp64's significand), got " + std::to_string(*k));
    const std::string nb = head.substr(slash + 1);
    const auto n = detail::parse_uint_in(nb, 0, kMaxBlock);
    if (!n) fail(raw, "'" + nb + "' is not a block size: expected an integer 1.." + std::to_string(kMaxBlock));
    if (*n == 0) fail(raw, "block size 0: a block holds at least one element");
    f.family_ = BlockFamily::hbfp;
    f.name_ = "hbfp";
    f.element_bits_ = *k;
    f.block_size_ = *n;
    f.scale_bits_ = 10;
  } else if (head == "nvfp4") {
    f.family_ = BlockFamily::nvfp4;
    f.name_ = "nvfp4";
    f.element_bits_ = 4;
    f.block_size_ = 16;
    f.scale_bits_ = 8;
    if (!parts.empty()) fail(raw, "nvfp4 takes no options (its blocks of 16, e4m3fn block scale and fp32 tensor scale are fixed); only @rounding");
  } else {
    const MxElement* mx = nullptr;
    for (const auto& m : kMx) {
      if (head == m.name) mx = &m;
    }
    if (!mx) {
      if (head.find('/') != std::string::npos) fail(raw, "only hbfp takes a block size after '/'; the mx formats have blocks of 32 and nvfp4 of 16");
      fail(raw, "unknown block format '" + head + "': expected hbfpK/N, mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4, mxint8 or nvfp4");
    }
    f.family_ = BlockFamily::mx;
    f.name_ = mx->name;
    f.element_bits_ = mx->bits;
    f.block_size_ = 32;
    f.scale_bits_ = 8;
  }

  bool seen_exp = false, seen_rule = false, seen_tile = false;
  for (const auto& o : parts) {
    if (o.empty()) fail(raw, "empty option (two ':' in a row or a trailing ':')");
    if (o.rfind("exp=", 0) == 0) {
      if (seen_exp) fail(raw, "'exp=' given twice");
      seen_exp = true;
      const auto w = detail::parse_uint_in(o.substr(4), 0, 1000000);
      if (!w || *w < 1 || *w > kMaxScaleBits) {
        fail(raw, "'" + o + "': the shared exponent needs 1.." + std::to_string(kMaxScaleBits) +
                      " bits (a W-bit scale holds exponents -(2^(W-1)-1) .. 2^(W-1)-1; wider would leave fp64's range)");
      }
      f.scale_bits_ = *w;
    } else if (o.rfind("rule=", 0) == 0) {
      if (seen_rule) fail(raw, "'rule=' given twice");
      seen_rule = true;
      const std::string r = o.substr(5);
      if (r == "max" || r == "floor") f.rule_ = ScaleRule::floor;
      else if (r == "ceil") f.rule_ = ScaleRule::ceil;
      else fail(raw, "'" + o + "': expected rule=max, rule=floor or rule=ceil");
    } else if (o == "tile") {
      if (seen_tile) fail(raw, "'tile' given twice");
      seen_tile = true;
      const int t = isqrt_exact(f.block_size_);
      if (t == 0) fail(raw, "'tile' makes a block a T x T tile, but the block size " + std::to_string(f.block_size_) + " is not a square");
      f.tile_ = t;
    } else {
      fail(raw, "unknown option '" + o + "': expected exp=W, rule=max|floor|ceil or tile");
    }
  }
  f.finish();
  return f;
}

std::string BlockFormat::to_string() const {
  std::string out = name_;
  if (family_ == BlockFamily::hbfp) {
    out += std::to_string(element_bits_);
    out += '/';
    out += std::to_string(block_size_);
  }
  if (family_ != BlockFamily::nvfp4) {
    const int default_bits = family_ == BlockFamily::hbfp ? 10 : 8;
    if (scale_bits_ != default_bits) {
      out += ":exp=";
      out += std::to_string(scale_bits_);
    }
    if (rule_ == ScaleRule::ceil) out += ":rule=ceil";
    if (tile_ != 0) out += ":tile";
  }
  if (rounding_ != Rounding{}) {
    out += '@';
    out += mpsim::to_string(rounding_);
  }
  return out;
}

BlockFormat BlockFormat::with_rounding(Rounding r) const {
  if (r.mode == RoundMode::hyst) throw FormatError("block format '" + to_string() + "': 'hyst' rounding does not apply to block formats");
  BlockFormat f = *this;
  f.rounding_ = r;
  f.finish();
  return f;
}

void BlockFormat::finish() {
  switch (family_) {
    case BlockFamily::hbfp: element_ = element_format_at(0); break;
    case BlockFamily::nvfp4: element_ = Format::parse("e2m1fn:sat").with_rounding(rounding_); break;
    case BlockFamily::mx:
      for (const auto& m : kMx) {
        if (name_ == m.name) element_ = Format::parse(m.element).with_rounding(rounding_);
      }
      break;
  }
  element_max_ = describe(element_).max_finite;
  int e = 0;
  std::frexp(element_max_, &e);  // max = f 2^e, f in [0.5, 1): floor(log2 max) = e - 1
  element_emax_ = e - 1;
}

Format BlockFormat::element_format_at(int X) const {
  if (family_ == BlockFamily::hbfp) {
    // Sign + K-1 magnitude bits 0.m: a float with one exponent bit and no specials is exactly a
    // uniform grid k * 2^(1 - bias - M), k = 0 .. 2^(M+1) - 1, whose code is k (so rne's
    // "even" is k's parity). bias = 2 - X gives the step 2^(X - (K-1)).
    FloatSpec s;
    s.exp_bits = 1;
    s.man_bits = element_bits_ - 2;
    s.bias = 2 - X;
    s.sp = Specials::none;
    s.sat = true;
    return Format::from_float(s, rounding_);
  }
  if (family_ == BlockFamily::nvfp4) throw FormatError("nvfp4 scales its elements by a non-power-of-two; it has no element_format_at");
  const Format& base = element_;
  if (base.kind() == FormatKind::integer) {
    IntSpec s = base.int_spec();
    s.scale = std::ldexp(s.scale, X);
    return Format::from_integer(s, rounding_);
  }
  FloatSpec s = base.float_spec();
  s.bias -= X;
  return Format::from_float(s, rounding_);
}

int BlockFormat::scale_max() const { return (1 << (scale_bits_ - 1)) - 1; }
int BlockFormat::scale_min() const { return -scale_max(); }

double BlockFormat::bits_per_element() const {
  return element_bits_ + static_cast<double>(scale_bits_) / block_size_;
}

bool BlockFormat::fits(Carrier c) const {
  // MX and NVFP4 elements have at most 4 significant bits, and an fp32 block scale keeps them
  // within fp32 (NVFP4's products with its fp32 tensor scale are the documented exception).
  if (family_ != BlockFamily::hbfp) return true;
  return element_bits_ - 1 <= (c == Carrier::fp32 ? 24 : 53);
}

void BlockFormat::require_fits(Carrier c) const {
  if (!fits(c)) {
    throw FormatError("block format '" + to_string() + "': its elements have " + std::to_string(element_bits_ - 1) +
                      " magnitude bits, wider than the fp32 carrier's 24-bit significand; use fp64 data");
  }
}

}  // namespace mpsim
