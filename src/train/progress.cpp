#include "src/train/progress.h"

#include <cmath>
#include <cstdio>

namespace mpsim::detail {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

void ProgressBar::start(std::size_t epoch, std::size_t epochs, std::size_t total_steps) {
  epoch_ = epoch;
  epochs_ = epochs;
  total_ = total_steps;
  started_ = last_draw_ = std::chrono::steady_clock::now();
}

void ProgressBar::update(std::size_t done, double loss, double accuracy, double images_per_second) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - started_).count();
  const double eta = done > 0 ? elapsed * static_cast<double>(total_ - done) / static_cast<double>(done) : NAN;
  constexpr int width = 24;
  const int filled = total_ ? static_cast<int>(width * done / total_) : width;
  std::string bar(static_cast<std::size_t>(filled), '=');
  if (filled < width) bar += '>', bar += std::string(static_cast<std::size_t>(width - filled - 1), ' ');
  char line[256];
  std::snprintf(line, sizeof line, "\repoch %zu/%zu [%s] %zu/%zu  loss %.4f  acc %.2f%%  %.0f img/s  ETA %s\033[K", epoch_,
                epochs_, bar.c_str(), done, total_, loss, 100.0 * accuracy, images_per_second, format_duration(eta).c_str());
  *out_ << line << std::flush;
}

void ProgressBar::finish() {
  if (enabled_) *out_ << "\r\033[K" << std::flush;
}

}  // namespace mpsim::detail
