// A one-line progress bar for terminals: epoch, step, loss, accuracy, images/s and ETA,
// redrawn in place at most a few times a second.
#pragma once

#include <chrono>
#include <cstddef>
#include <ostream>
#include <string>

namespace mpsim::detail {

class ProgressBar {
 public:
  // `out` == nullptr or !enabled: draws nothing.
  ProgressBar(std::ostream* out, bool enabled) : out_(out), enabled_(enabled && out != nullptr) {}

  void start(std::size_t epoch, std::size_t epochs, std::size_t total_steps);
  // After `done` of the epoch's steps, with the running mean loss and accuracy.
  void update(std::size_t done, double loss, double accuracy, double images_per_second);
  // Clears the line (the caller then prints the epoch's summary).
  void finish();

 private:
  std::ostream* out_;
  bool enabled_;
  std::size_t epoch_ = 0, epochs_ = 0, total_ = 0;
  std::chrono::steady_clock::time_point started_, last_draw_;
};

// "1:05:09" / "4:07"
std::string format_duration(double seconds);

}  // namespace mpsim::detail
