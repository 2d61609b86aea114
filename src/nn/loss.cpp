// Softmax cross-entropy, torch.nn.CrossEntropyLoss(reduction="mean", label_smoothing=eps)
// (docs/nn.md). Each row is computed in double from its float logits (max subtracted first, so
// exp never overflows); the batch mean sums the row losses in row order. Rows are independent,
// so threads split rows and the result does not depend on their number.
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "mpsim/layers.h"

namespace mpsim {

LossResult softmax_cross_entropy(const Tensor& logits, const std::vector<std::uint32_t>& labels,
                                 float label_smoothing) {
  const Shape& s = logits.shape();
  if (s.size() != 2 || s[0] == 0 || s[1] == 0) {
    throw std::invalid_argument("softmax_cross_entropy: logits must be [N, classes] with N, classes > 0, got " +
                                to_string(s));
  }
  const std::size_t N = s[0], K = s[1];
  if (labels.size() != N) {
    throw std::invalid_argument("softmax_cross_entropy: " + std::to_string(labels.size()) + " labels for logits " +
                                to_string(s));
  }
  for (std::size_t i = 0; i < N; ++i) {
    if (labels[i] >= K) {
      throw std::invalid_argument("softmax_cross_entropy: label " + std::to_string(labels[i]) + " of row " +
                                  std::to_string(i) + " out of range for logits " + to_string(s));
    }
  }
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) {
    throw std::invalid_argument("softmax_cross_entropy: label smoothing must lie in [0, 1], got " +
                                std::to_string(label_smoothing));
  }

  const double eps = label_smoothing;
  const double off = eps / static_cast<double>(K);  // target of every class ...
  const double on = 1.0 - eps + off;                // ... and of the label
  const auto count = static_cast<double>(N);
  LossResult r;
  r.grad = Tensor(s);
  std::vector<double> row_loss(N);
  std::vector<std::uint8_t> row_correct(N);
  const float* x = logits.data();
  float* g = r.grad.data();
  const auto rows = static_cast<long long>(N);

#pragma omp parallel for schedule(static) if (N * K >= 4096)
  for (long long ii = 0; ii < rows; ++ii) {
    const auto i = static_cast<std::size_t>(ii);
    const float* row = x + i * K;
    float* grow = g + i * K;
    const std::size_t label = labels[i];
    bool finite = true;
    std::size_t arg = 0;  // the first maximal logit
    for (std::size_t j = 0; j < K; ++j) {
      finite = finite && std::isfinite(row[j]);
      if (row[j] > row[arg]) arg = j;
    }
    if (!finite) {
      // The trainer detects the NaN; the gradient of this row is NaN too, so nothing silently
      // trains on it.
      row_loss[i] = std::numeric_limits<double>::quiet_NaN();
      for (std::size_t j = 0; j < K; ++j) grow[j] = std::numeric_limits<float>::quiet_NaN();
      row_correct[i] = 0;
      continue;
    }
    row_correct[i] = arg == label ? 1 : 0;
    const double mx = row[arg];
    double se = 0.0;
    for (std::size_t j = 0; j < K; ++j) se += std::exp(row[j] - mx);
    const double lse = mx + std::log(se);
    // -sum_j t_j log p_j with -log p_j = lse - x_j >= 0: a sum of non-negative terms.
    double loss = on * (lse - row[label]);
    if (off != 0.0) {
      double rest = 0.0;
      for (std::size_t j = 0; j < K; ++j) {
        if (j != label) rest += lse - row[j];
      }
      loss += off * rest;
    }
    row_loss[i] = loss;
    for (std::size_t j = 0; j < K; ++j) {
      const double p = std::exp(row[j] - lse);
      const double t = j == label ? on : off;
      grow[j] = static_cast<float>((p - t) / count);
    }
  }

  double total = 0.0;
  for (std::size_t i = 0; i < N; ++i) {
    total += row_loss[i];
    r.correct += row_correct[i];
  }
  r.loss = total / count;
  return r;
}

}  // namespace mpsim
