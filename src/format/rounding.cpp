// Parsing and printing of rounding modes (the part of a format string after '@').
#include "mpsim/format.h"
#include "mpsim/round.h"
#include "text.h"

namespace mpsim {

namespace {

struct NamedMode {
  const char* name;
  RoundMode mode;
};

constexpr NamedMode kPlainModes[] = {
    {"rne", RoundMode::rne}, {"rna", RoundMode::rna}, {"rz", RoundMode::rz},
    {"ru", RoundMode::ru},   {"rd", RoundMode::rd},   {"ro", RoundMode::ro},
    {"sr", RoundMode::sr},   {"hyst", RoundMode::hyst},
};

constexpr const char* kExpected = "one of rne, rna, rz, ru, rd, ro, sr, srN (N = 1..32), hyst, hystN";

}  // namespace

Rounding parse_rounding(const std::string& raw) {
  const std::string text = detail::lowercase(raw);
  for (const auto& m : kPlainModes) {
    if (text == m.name) return {m.mode, m.mode == RoundMode::hyst ? 1 : 0};
  }
  // srN and hystN: a mode name followed by an unsigned decimal parameter.
  if (text.size() > 2 && text.rfind("sr", 0) == 0) {
    if (auto n = detail::parse_uint_in(text.substr(2), 1, 32)) return {RoundMode::srn, *n};
  }
  if (text.size() > 4 && text.rfind("hyst", 0) == 0) {
    if (auto h = detail::parse_uint_in(text.substr(4), 1, 1 << 20)) return {RoundMode::hyst, *h};
  }
  if (text.rfind("sr", 0) == 0 && detail::is_digits(text.substr(2))) {
    throw FormatError("rounding mode '" + raw + "': srN takes N random bits from 1 to 32");
  }
  throw FormatError("unknown rounding mode '" + raw + "': expected " + kExpected);
}

std::string to_string(const Rounding& r) {
  switch (r.mode) {
    case RoundMode::srn: return "sr" + std::to_string(r.param);
    case RoundMode::hyst: return r.param <= 1 ? "hyst" : "hyst" + std::to_string(r.param);
    default: break;
  }
  for (const auto& m : kPlainModes) {
    if (m.mode == r.mode) return m.name;
  }
  return "?";
}

}  // namespace mpsim
