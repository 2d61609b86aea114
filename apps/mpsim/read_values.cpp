// Numbers for `mpsim quantize`: from the command line and from a file, one per line.
#include <fmt/core.h>

#include <cctype>
#include <cstdlib>
#include <fstream>

#include "cli.h"

namespace mpsim::cli {

// Decimal (or hex-float, inf, nan) text to fp64, rejecting anything that is not one number.
namespace {

double parse_value(const std::string& text, const std::string& where) {
  if (!text.empty() && !std::isspace(static_cast<unsigned char>(text.front()))) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size()) return v;
  }
  throw UsageError(fmt::format("{}: '{}' is not a number (expected a decimal such as 0.3, -2.5e-5, 0x1.8p-3, inf or nan)", where, text));
}

}  // namespace

std::vector<std::pair<std::string, double>> read_values(const std::vector<std::string>& values, const std::string& file) {
  std::vector<std::pair<std::string, double>> in;
  for (const auto& v : values) in.emplace_back(v, parse_value(v, "value"));
  if (!file.empty()) {
    std::ifstream f(file);
    if (!f) throw std::runtime_error(fmt::format("cannot open '{}' for reading", file));
    std::string line;
    std::size_t n = 0;
    while (std::getline(f, line)) {
      ++n;
      // One number per line; blank lines and '#' comments are skipped.
      const auto first = line.find_first_not_of(" \t\r");
      if (first == std::string::npos || line[first] == '#') continue;
      const auto last = line.find_last_not_of(" \t\r");
      const std::string token = line.substr(first, last - first + 1);
      in.emplace_back(token, parse_value(token, fmt::format("{}:{}", file, n)));
    }
    if (f.bad()) throw std::runtime_error(fmt::format("error while reading '{}'", file));
  }
  if (in.empty()) throw UsageError("no values: give numbers after the format or --file FILE");
  return in;
}

}  // namespace mpsim::cli
