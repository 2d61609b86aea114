// Inputs that exercise every decision of a rounding: each value of the format, each midpoint
// between neighbours, the fp32 and fp64 numbers right next to them, the edges of the range,
// specials, random fp32 bit patterns, random fp64 values over the format's range, and the
// carriers' subnormals and random fp64 bit patterns; both signs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "mpsim/format.h"

namespace mpsim::test {

// The distinct finite values of a format (codes decoded; formats wider than 16 bits sampled).
inline std::vector<double> format_values(const Format& f) {
  std::vector<double> v;
  const int bits = f.bits();
  const std::uint64_t count = bits >= 64 ? 0 : (std::uint64_t{1} << bits);
  const std::uint64_t step = (bits <= 16) ? 1 : std::max<std::uint64_t>(1, count / 65536);
  for (std::uint64_t c = 0; c < count; c += step) {
    const CodeValue cv = decode(f, c);
    if (std::isfinite(cv.value)) v.push_back(cv.value);
  }
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

inline std::vector<double> sample_inputs(const Format& f, std::size_t random_count, std::uint64_t seed = 12345) {
  const std::vector<double> v = format_values(f);
  std::vector<double> in;
  auto around = [&](double x) {
    in.push_back(x);
    in.push_back(std::nextafter(x, INFINITY));
    in.push_back(std::nextafter(x, -INFINITY));
    const float xf = static_cast<float>(x);
    if (std::isfinite(xf)) {
      in.push_back(static_cast<double>(std::nextafter(xf, INFINITY)));
      in.push_back(static_cast<double>(std::nextafter(xf, -INFINITY)));
    }
  };
  for (std::size_t i = 0; i < v.size(); ++i) {
    around(v[i]);
    if (i + 1 < v.size()) around(v[i] + (v[i + 1] - v[i]) / 2);
  }
  if (v.size() >= 2) {
    const double max = v.back(), prev = v[v.size() - 2];
    around(max + (max - prev) / 2);
    around(max + (max - prev));
    around(max * 4);
  }
  double smallest = 1;
  for (double x : v) {
    if (x > 0) {
      smallest = x;
      break;
    }
  }
  for (double s : {0.5, 0.25, 0.75, 1.0 / 1024}) around(smallest * s);
  for (int e : {-149, -140, -130, -127, -126, -100, -60, -20, 0, 20, 60, 100, 127}) around(std::ldexp(1.0, e));
  in.push_back(std::ldexp(1.0, -1074));
  in.push_back(INFINITY);
  in.push_back(NAN);
  in.push_back(0.0);
  std::mt19937_64 gen(seed);
  for (std::size_t i = 0; i < random_count; ++i) {
    const auto b = static_cast<std::uint32_t>(gen());
    float x;
    std::memcpy(&x, &b, sizeof x);
    in.push_back(static_cast<double>(x));
  }
  // Random fp64 values (53-bit significands) over the format's range and a little beyond.
  const double lo = smallest, hi = v.empty() ? 1.0 : std::max(std::fabs(v.back()), smallest);
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  std::uniform_int_distribution<int> ex(std::ilogb(lo) - 6, std::ilogb(hi) + 2);
  for (std::size_t i = 0; i < random_count; ++i) in.push_back(std::ldexp(mant(gen), ex(gen)));
  // The carriers' subnormals, which have no hidden bit to find their binade by: random fp32
  // subnormal patterns (a random fp32 pattern is one only once in 256) and random fp64 ones,
  // and random fp64 bit patterns of every exponent.
  for (std::size_t i = 0; i < random_count / 8; ++i) {
    const auto b32 = static_cast<std::uint32_t>(gen()) & 0x007FFFFFu;
    float x;
    std::memcpy(&x, &b32, sizeof x);
    in.push_back(static_cast<double>(x));
    double y;
    const std::uint64_t b64 = gen() & 0x000FFFFFFFFFFFFFull;
    std::memcpy(&y, &b64, sizeof y);
    in.push_back(y);
    const std::uint64_t any = gen() & 0x7FFFFFFFFFFFFFFFull;
    std::memcpy(&y, &any, sizeof y);
    in.push_back(y);
  }
  const std::size_t n = in.size();
  for (std::size_t i = 0; i < n; ++i) in.push_back(-in[i]);
  return in;
}

}  // namespace mpsim::test
