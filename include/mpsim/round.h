// Rounding modes and the key of the random bits that stochastic rounding draws.
#pragma once

#include <cstdint>
#include <string>

namespace mpsim {

enum class RoundMode : std::uint8_t {
  rne,   // to nearest, ties to the even code
  rna,   // to nearest, ties away from zero
  rz,    // toward zero (truncation)
  ru,    // toward +infinity
  rd,    // toward -infinity
  ro,    // to odd: exact values stay, others take the neighbour with the odd code
  sr,    // stochastic, exact: up with probability equal to the discarded fraction
  srn,   // stochastic with N random bits added below the last kept bit, then truncated
  hyst,  // hysteresis (weight updates): keep the previous value within h ulps
};

struct Rounding {
  RoundMode mode = RoundMode::rne;
  // srN: the number of random bits N (1..32). hyst: the threshold h in ulps (>= 1).
  int param = 0;

  bool operator==(const Rounding&) const = default;
  bool stochastic() const { return mode == RoundMode::sr || mode == RoundMode::srn; }
};

// Where a stochastic rounding draws its random bits: element `index` of stream `stream` under
// `seed`. The bits depend on nothing else (not on threads, vector width or call chunking).
struct RandomKey {
  std::uint64_t seed = 0;
  std::uint32_t stream = 0;
};

// "rne", "sr", "sr8", "hyst", "hyst3" ...; throws FormatError on anything else.
Rounding parse_rounding(const std::string& text);
std::string to_string(const Rounding& r);

}  // namespace mpsim
