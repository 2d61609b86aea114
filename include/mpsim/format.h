// Number formats as data: a descriptor parsed from a short string, printed back canonically,
// with every property derived from it (docs/formats.md is the full grammar and semantics).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mpsim/round.h"

namespace mpsim {

// A malformed or impossible format string, rounding mode or value. The message names the
// offending token and what was expected; the CLI turns it into exit code 2.
struct FormatError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// How a float format treats magnitudes below its smallest normal number (the `sub=` option).
enum class Subnormals : std::uint8_t {
  ieee,      // gradual underflow (CFG-1)
  flushout,  // results that would be subnormal become zero after rounding (CFG-2)
  asnormal,  // a zero exponent field is read as a normal exponent; m = 0 stays zero (CFG-5)
  flushin,   // subnormal codes read as zero; rounding as if there were no subnormals (CFG-6)
};

// Which codes are special (the `sp=` option).
enum class Specials : std::uint8_t {
  ieee,  // all-ones exponent: mantissa 0 is infinity, anything else NaN
  fn,    // no infinity; only S.1..1.1..1 is NaN (OCP E4M3)
  fnuz,  // no infinity, no -0; the only NaN is the code 1.0..0.0..0 (bias one larger by default)
  ext,   // all-ones exponent holds finite values; only the all-ones code is infinity; no NaN (CFG-4)
  none,  // every code is finite (OCP E3M2, E2M3, E2M1)
};

struct FloatSpec {
  int exp_bits = 0;
  int man_bits = 0;
  int bias = 0;
  Subnormals sub = Subnormals::ieee;
  Specials sp = Specials::ieee;
  bool sat = false;         // overflow saturates to the largest finite value
  bool is_signed = true;    // false only for e8m0fnu
  bool has_zero = true;     // false only for e8m0fnu (its code 0 is 2^-bias)
  bool inf_is_nan = false;  // dlfloat16: the one all-ones code stands for both infinity and NaN
  int radix_log2 = 1;       // 2 for fp4r4 (values are powers of 4)

  bool operator==(const FloatSpec&) const = default;
};

struct FixedSpec {
  int int_bits = 0;   // I of qI.F, sign bit included for signed formats
  int frac_bits = 0;  // F of qI.F
  bool is_signed = true;
  bool wrap = false;  // two's-complement wrap-around on overflow instead of saturation

  bool operator==(const FixedSpec&) const = default;
  int bits() const { return int_bits + frac_bits; }
  // Range of the integer k of a value k * 2^-F (two's complement when signed).
  long long k_min() const { return is_signed ? -(1LL << (bits() - 1)) : 0; }
  long long k_max() const { return is_signed ? (1LL << (bits() - 1)) - 1 : (1LL << bits()) - 1; }
};

struct IntSpec {
  int bits = 0;
  bool is_signed = true;
  double scale = 1.0;      // y_q = (z - zp) * scale
  std::int64_t zp = 0;     // zero point
  bool perchannel = false; // the consumer supplies one scale per output channel

  bool operator==(const IntSpec&) const = default;
  // Range of the code z (two's complement when signed).
  long long z_min() const { return is_signed ? -(1LL << (bits - 1)) : 0; }
  long long z_max() const { return is_signed ? (1LL << (bits - 1)) - 1 : (1LL << bits) - 1; }
};

enum class FormatKind : std::uint8_t { floating, fixed, integer };

// What a carrier type (the C++ type that holds quantized values) can represent.
enum class Carrier : std::uint8_t { fp32, fp64 };

class Format {
 public:
  // Parses the grammar of docs/formats.md (case-insensitive). Throws FormatError.
  static Format parse(std::string_view text);

  static Format from_float(const FloatSpec& s, Rounding r = {});
  static Format from_fixed(const FixedSpec& s, Rounding r = {});
  static Format from_integer(const IntSpec& s, Rounding r = {});

  // The canonical lowercase string: the same format always prints the same string and
  // parse(f.to_string()) == f.
  std::string to_string() const;

  FormatKind kind() const;
  const FloatSpec& float_spec() const { return std::get<FloatSpec>(spec_); }
  const FixedSpec& fixed_spec() const { return std::get<FixedSpec>(spec_); }
  const IntSpec& int_spec() const { return std::get<IntSpec>(spec_); }
  const Rounding& rounding() const { return rounding_; }
  Format with_rounding(Rounding r) const;

  // Width of a code in bits (sign included).
  int bits() const;

  // Whether every finite value of the format is exactly representable in the carrier.
  bool fits(Carrier c) const;
  // Throws FormatError naming what the carrier lacks, if !fits(c).
  void require_fits(Carrier c) const;

  bool operator==(const Format&) const = default;

 private:
  std::variant<FloatSpec, FixedSpec, IntSpec> spec_;
  Rounding rounding_;
};

// ---- codes and values --------------------------------------------------------------------

enum class CodeClass : std::uint8_t { zero, subnormal, normal, infinite, nan };

struct CodeValue {
  double value;     // NaN for NaN codes, +-inf for infinity codes
  CodeClass klass;
};

// Number of distinct codes (2^bits).
std::uint64_t code_count(const Format& f);
// The value a code stands for. Codes at or above code_count() throw FormatError.
CodeValue decode(const Format& f, std::uint64_t code);
// The code of a value the format represents (a quantize() result). A value the format cannot
// hold (not on its grid, or NaN in a format without a NaN code) throws FormatError.
std::uint64_t encode(const Format& f, double value);

// ---- derived properties -------------------------------------------------------------------

struct FormatInfo {
  std::string name;           // canonical string
  std::string kind;           // "float", "fixed", "integer"
  int bits = 0;
  int exp_bits = 0, man_bits = 0, bias = 0;   // floats
  int emin = 0, emax = 0;                     // floats: exponents of min normal and max finite
  int precision = 0;                          // significant bits p (floats), value bits (others)
  double max_finite = 0, min_finite = 0;      // largest and most negative finite values
  double min_normal = 0, min_subnormal = 0;   // smallest positive normal / positive value
  double unit_roundoff = 0;                   // 2^-p for floats; half the step for fixed/int
  double dynamic_range_decades = 0;           // log10(max / smallest positive)
  double step = 0;                            // fixed/int: distance between neighbours
  bool has_inf = false, has_nan = false, has_neg_zero = false, has_subnormals = false;
  std::vector<std::uint64_t> inf_codes, nan_codes;
  std::string subnormals, specials, overflow;  // words for the user
};

FormatInfo describe(const Format& f);

}  // namespace mpsim
