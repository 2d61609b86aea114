#include "text.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <limits>

namespace mpsim::detail {

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool is_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::optional<int> parse_uint_in(std::string_view s, int lo, int hi) {
  if (!is_digits(s) || s.size() > 9) return std::nullopt;
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

std::optional<long long> parse_int(std::string_view s) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  std::string_view digits = s;
  if (!digits.empty() && digits.front() == '-') digits.remove_prefix(1);
  if (!is_digits(digits)) return std::nullopt;
  long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_double(std::string_view s) {
  // strtod accepts leading spaces and stops early; demand the whole token instead.
  if (s.empty() || std::isspace(static_cast<unsigned char>(s.front()))) return std::nullopt;
  std::string buf(s);
  char* end = nullptr;
  double v = std::strtod(buf.c_str(), &end);
  if (end != buf.c_str() + buf.size()) return std::nullopt;
  return v;
}

std::string shortest(double v) {
  if (v != v) return "nan";
  if (v == std::numeric_limits<double>::infinity()) return "inf";
  if (v == -std::numeric_limits<double>::infinity()) return "-inf";
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, p);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return parts;
}

std::optional<std::string> disallowed_character(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isspace(u) || c == ',' || c == ';' || c == '|' || c == '#' || u < 0x20 || u >= 0x7f) {
      return std::string("character '") + (std::isspace(u) ? std::string("whitespace") : std::string(1, c)) +
             "' is not allowed in a format string";
    }
  }
  return std::nullopt;
}

bool spelled_as_block_format(std::string_view text) {
  const std::string s = lowercase(text);
  return s.find('/') != std::string::npos || s.rfind("hbfp", 0) == 0 || s.rfind("mx", 0) == 0 || s.rfind("nvfp4", 0) == 0;
}

}  // namespace mpsim::detail
