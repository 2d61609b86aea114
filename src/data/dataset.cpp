// The Dataset record and what reshapes it: subsets, padding, per-channel statistics and
// normalization, and loading by name.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "mpsim/data.h"

namespace mpsim {

const char* to_string(Split split) { return split == Split::train ? "train" : "test"; }

std::size_t Dataset::image_size() const { return images.dim(1) * images.dim(2) * images.dim(3); }

std::vector<std::size_t> Dataset::class_counts() const {
  std::vector<std::size_t> counts(num_classes, 0);
  for (const std::uint32_t l : labels) {
    if (l >= num_classes) {
      throw std::invalid_argument("data set '" + name + "': label " + std::to_string(l) + " >= " +
                                  std::to_string(num_classes) + " classes");
    }
    ++counts[l];
  }
  return counts;
}

void Dataset::validate() const {
  if (images.rank() != 4) {
    throw std::invalid_argument("data set '" + name + "': images must be [N, C, H, W], got " +
                                to_string(images.shape()));
  }
  if (images.dim(0) != labels.size()) {
    throw std::invalid_argument("data set '" + name + "': " + std::to_string(images.dim(0)) + " images but " +
                                std::to_string(labels.size()) + " labels");
  }
  (void)class_counts();  // checks every label against num_classes
}

namespace {

// A data set with the same image geometry and classes as `like`, holding n samples.
Dataset empty_like(const Dataset& like, std::size_t n, std::string name) {
  Dataset out;
  out.name = std::move(name);
  out.num_classes = like.num_classes;
  out.images = Tensor({n, like.channels(), like.height(), like.width()});
  out.labels.resize(n);
  return out;
}

Dataset gather(const Dataset& data, std::span<const std::size_t> indices, std::string name) {
  Dataset out = empty_like(data, indices.size(), std::move(name));
  const std::size_t sz = data.image_size();
  for (std::size_t k = 0; k < indices.size(); ++k) {
    if (indices[k] >= data.size()) {
      throw std::out_of_range("subset of data set '" + data.name + "': index " + std::to_string(indices[k]) +
                              " is past its " + std::to_string(data.size()) + " samples");
    }
    const float* src = data.image(indices[k]);
    std::copy(src, src + sz, out.images.data() + k * sz);
    out.labels[k] = data.labels[indices[k]];
  }
  return out;
}

}  // namespace

Dataset subset(const Dataset& data, std::span<const std::size_t> indices) {
  return gather(data, indices, data.name + "[" + std::to_string(indices.size()) + " selected]");
}

Dataset subset(const Dataset& data, std::size_t count, SubsetMode mode) {
  data.validate();
  if (count > data.size()) {
    throw std::invalid_argument("subset of " + std::to_string(count) + " samples from data set '" + data.name +
                                "', which has only " + std::to_string(data.size()));
  }
  std::vector<std::size_t> picked;
  picked.reserve(count);
  if (mode == SubsetMode::first) {
    for (std::size_t i = 0; i < count; ++i) picked.push_back(i);
    return gather(data, picked, data.name + "[:" + std::to_string(count) + "]");
  }
  const std::size_t k = data.num_classes;
  if (k == 0) throw std::invalid_argument("stratified subset of data set '" + data.name + "' with no classes");
  std::vector<std::size_t> quota(k);
  for (std::size_t c = 0; c < k; ++c) quota[c] = count / k + (c < count % k ? 1 : 0);
  const std::vector<std::size_t> available = data.class_counts();
  for (std::size_t c = 0; c < k; ++c) {
    if (available[c] < quota[c]) {
      throw std::invalid_argument("stratified subset of " + std::to_string(count) + " samples from data set '" +
                                  data.name + "': class " + std::to_string(c) + " has " +
                                  std::to_string(available[c]) + " samples, needs " + std::to_string(quota[c]));
    }
  }
  // One pass in file order keeps the chosen samples in file order.
  for (std::size_t i = 0; i < data.size() && picked.size() < count; ++i) {
    std::size_t& q = quota[data.labels[i]];
    if (q > 0) {
      --q;
      picked.push_back(i);
    }
  }
  return gather(data, picked, data.name + "[stratified " + std::to_string(count) + "]");
}

Dataset pad_images(const Dataset& data, std::size_t height, std::size_t width) {
  data.validate();
  const std::size_t h = data.height(), w = data.width(), ch = data.channels();
  if (height < h || width < w) {
    throw std::invalid_argument("cannot pad the " + std::to_string(h) + "x" + std::to_string(w) +
                                " images of data set '" + data.name + "' to the smaller " + std::to_string(height) +
                                "x" + std::to_string(width));
  }
  Dataset out = empty_like(data, data.size(), data.name);
  out.images = Tensor({data.size(), ch, height, width});  // zeros
  out.labels = data.labels;
  const std::size_t top = (height - h) / 2, left = (width - w) / 2;
  for (std::size_t n = 0; n < data.size(); ++n) {
    for (std::size_t c = 0; c < ch; ++c) {
      const float* src = data.image(n) + c * h * w;
      float* dst = out.images.data() + ((n * ch + c) * height + top) * width + left;
      for (std::size_t y = 0; y < h; ++y) std::copy(src + y * w, src + (y + 1) * w, dst + y * width);
    }
  }
  return out;
}

Normalization channel_statistics(const Dataset& data) {
  data.validate();
  const std::size_t ch = data.channels(), plane = data.height() * data.width(), n = data.size();
  if (n == 0 || plane == 0) {
    throw std::invalid_argument("channel statistics of the empty data set '" + data.name + "'");
  }
  Normalization norm;
  norm.mean.assign(ch, 0.0);
  norm.std.assign(ch, 0.0);
  const double count = static_cast<double>(n) * static_cast<double>(plane);
  // One thread per channel at most: each channel's sums run in sample order on one thread, so
  // the result does not depend on the thread count.
  const int threads = static_cast<int>(std::min<std::size_t>(ch, static_cast<std::size_t>(omp_get_max_threads())));
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::size_t c = 0; c < ch; ++c) {
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float* p = data.image(i) + c * plane;
      for (std::size_t k = 0; k < plane; ++k) sum += p[k];
    }
    const double mean = sum / count;
    double sq = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float* p = data.image(i) + c * plane;
      for (std::size_t k = 0; k < plane; ++k) {
        const double d = p[k] - mean;
        sq += d * d;
      }
    }
    norm.mean[c] = mean;
    norm.std[c] = std::sqrt(sq / count);
  }
  return norm;
}

void normalize(Tensor& images, const Normalization& norm, int threads) {
  if (images.rank() != 4 || images.dim(1) != norm.mean.size() || norm.std.size() != norm.mean.size()) {
    throw std::invalid_argument("normalize: images of shape " + to_string(images.shape()) + " with " +
                                std::to_string(norm.mean.size()) + " means and " + std::to_string(norm.std.size()) +
                                " standard deviations");
  }
  for (const double s : norm.std) {
    if (!(s > 0)) throw std::invalid_argument("normalize: standard deviation " + std::to_string(s) + " is not positive");
  }
  const std::size_t ch = images.dim(1), plane = images.dim(2) * images.dim(3);
  const auto count = static_cast<std::ptrdiff_t>(images.dim(0));
  // Element-wise: any split over samples gives the same bits.
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : omp_get_max_threads())
  for (std::ptrdiff_t n = 0; n < count; ++n) {
    for (std::size_t c = 0; c < ch; ++c) {
      // torchvision's Normalize: float32 mean and std, a subtraction then a division.
      const float m = static_cast<float>(norm.mean[c]);
      const float s = static_cast<float>(norm.std[c]);
      float* p = images.data() + (static_cast<std::size_t>(n) * ch + c) * plane;
      for (std::size_t k = 0; k < plane; ++k) p[k] = (p[k] - m) / s;
    }
  }
}

Dataset load_dataset(const std::string& kind, const std::string& dir, Split split) {
  if (kind == "fashion-mnist") return dir.empty() ? load_fashion_mnist(split) : load_fashion_mnist(dir, split);
  const bool known = kind == "mnist" || kind == "cifar10" || kind == "cifar100" || kind == "cifar100-coarse";
  if (!known) {
    throw std::invalid_argument("unknown data set '" + kind +
                                "' (expected mnist, fashion-mnist, cifar10, cifar100 or cifar100-coarse)");
  }
  if (dir.empty()) throw std::invalid_argument("data set '" + kind + "' has no default location: give its directory");
  if (kind == "mnist") return load_mnist(dir, split);
  if (kind == "cifar10") return load_cifar10(dir, split);
  return load_cifar100(dir, split, kind == "cifar100" ? CifarLabels::fine : CifarLabels::coarse);
}

}  // namespace mpsim
