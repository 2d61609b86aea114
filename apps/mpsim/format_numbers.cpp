// Number and code printing shared by the subcommands.
#include <charconv>
#include <cmath>
#include <cstdio>

#include "cli.h"

namespace mpsim::cli {

std::string num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, p);
}

nlohmann::json jnum(double v) {
  if (std::isfinite(v)) return v;
  return num(v);
}

std::string hex_code(std::uint64_t code, int bits) {
  const int digits = bits <= 0 ? 1 : (bits + 3) / 4;
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%0*llx", digits, static_cast<unsigned long long>(code));
  return buf;
}

}  // namespace mpsim::cli
