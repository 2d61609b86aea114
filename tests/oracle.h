// An independent oracle for float formats: the sorted table of a format's finite values (built
// from decode(), which only defines what each code means) and a binary search for the two
// neighbours of an input. It shares no rounding code with the reference quantizer.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "mpsim/format.h"

namespace mpsim::test {

class TableOracle {
 public:
  explicit TableOracle(const Format& f) : f_(f) {
    const FloatSpec& s = f.float_spec();
    const int mag_bits = s.exp_bits + s.man_bits;
    signed_ = s.is_signed;
    fnuz_ = s.sp == Specials::fnuz;
    sat_ = s.sat;
    flushout_ = s.sub == Subnormals::flushout;
    radix_ = s.radix_log2 == 2 ? 4.0 : 2.0;
    man_bits_ = s.man_bits;
    for (std::uint64_t c = 0; c < (std::uint64_t{1} << mag_bits); ++c) {
      const CodeValue v = decode(f, c);  // sign bit clear: magnitudes
      if (v.klass == CodeClass::infinite) has_inf_ = true;
      if (v.klass == CodeClass::nan) has_nan_ = true;
      if (v.klass == CodeClass::infinite || v.klass == CodeClass::nan) continue;
      entries_.push_back({v.value, c});
    }
    if (signed_) {
      // NaN codes may sit in the negative half (fnuz).
      for (std::uint64_t c = 0; c < (std::uint64_t{1} << mag_bits); ++c) {
        if (decode(f, c | (std::uint64_t{1} << mag_bits)).klass == CodeClass::nan) has_nan_ = true;
      }
    }
    // Sort by value; several codes may share a value (flushed subnormal codes read as zero):
    // the smallest code is the one rounding produces.
    std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
      return a.value < b.value || (a.value == b.value && a.code < b.code);
    });
    entries_.erase(std::unique(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.value == b.value; }),
                   entries_.end());
    max_ = entries_.back().value;
    const double prev = entries_[entries_.size() - 2].value;
    // The next value the format would have with one more binade: the top binade's step again
    // (or one radix step for formats without mantissa bits).
    beyond_ = man_bits_ == 0 ? max_ * radix_ : max_ + (max_ - prev);
    beyond_code_ = entries_.back().code + 1;
    // Smallest normal: the first value whose code is not subnormal.
    min_normal_ = 0;
    for (const auto& e : entries_) {
      if (e.value > 0 && decode(f, e.code).klass == CodeClass::normal) {
        min_normal_ = e.value;
        break;
      }
    }
  }

  const std::vector<double>& values() const {
    if (values_.empty()) {
      for (const auto& e : entries_) values_.push_back(e.value);
    }
    return values_;
  }

  double round(double x, RoundMode mode) const {
    constexpr double inf = std::numeric_limits<double>::infinity();
    constexpr double nan = std::numeric_limits<double>::quiet_NaN();
    if (std::isnan(x)) return nan;
    const bool neg = std::signbit(x);
    if (!signed_ && (neg || x == 0)) return nan;
    const auto sign = [&](double m) { return (m == 0 && fnuz_) ? 0.0 : (neg ? -m : m); };
    const bool tz = mode == RoundMode::rz || mode == RoundMode::ro || (mode == RoundMode::ru && neg) ||
                    (mode == RoundMode::rd && !neg);
    const auto overflow = [&](bool toward_zero) {
      if (toward_zero || sat_) return sign(max_);
      if (has_inf_) return neg ? -inf : inf;
      if (has_nan_) return nan;
      return sign(max_);
    };
    if (std::isinf(x)) return overflow(false);
    const double a = std::fabs(x);
    // First entry greater than a.
    const auto it = std::upper_bound(entries_.begin(), entries_.end(), a, [](double v, const Entry& e) { return v < e.value; });
    if (it == entries_.begin()) return sign(entries_.front().value);  // below everything (no zero)
    const Entry lo = *(it - 1);
    if (lo.value == a) return sign(flush(lo.value));
    const bool above = it == entries_.end();
    const Entry hi = above ? Entry{beyond_, beyond_code_} : *it;
    // Midpoint of two neighbouring values of a narrow format: exact in fp64.
    const double mid = (lo.value + hi.value) / 2;
    bool up = false;
    switch (mode) {
      case RoundMode::rne: up = a > mid || (a == mid && (lo.code & 1) != 0); break;
      case RoundMode::rna: up = a >= mid; break;
      case RoundMode::rz: up = false; break;
      case RoundMode::ru: up = !neg; break;
      case RoundMode::rd: up = neg; break;
      case RoundMode::ro: up = (lo.code & 1) == 0; break;
      default: return nan;
    }
    if (up && above) return overflow(tz);
    return sign(flush(up ? hi.value : lo.value));
  }

 private:
  struct Entry {
    double value;
    std::uint64_t code;
  };
  double flush(double v) const { return (flushout_ && v > 0 && v < min_normal_) ? 0.0 : v; }

  Format f_;
  std::vector<Entry> entries_;
  mutable std::vector<double> values_;
  double max_ = 0, beyond_ = 0, min_normal_ = 0, radix_ = 2;
  std::uint64_t beyond_code_ = 0;
  int man_bits_ = 0;
  bool signed_ = true, fnuz_ = false, sat_ = false, flushout_ = false, has_inf_ = false, has_nan_ = false;
};

// Bitwise equality that treats all NaNs as equal and distinguishes -0 from +0.
inline bool same(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

}  // namespace mpsim::test
