#include "mpsim/tensor.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>

namespace mpsim {

namespace {

// The storage of recently destroyed large tensors, for Tensor::uninitialized. A training step
// makes and drops tensors of the same few activation sizes in every layer, and a fresh one costs
// a zero-fill (and, once freed memory has gone back to the system, page faults) that the layer
// then overwrites anyway. Only large tensors are kept (a small zero-fill costs little), the most
// recent kEntries of them and at most kBytes in all, so the memory held stays bounded; a request
// takes the most recent entry of exactly its size.
class StoragePool {
 public:
  static constexpr std::size_t kMinFloats = std::size_t{1} << 16;  // 256 KiB
  static constexpr std::size_t kEntries = 8;
  static constexpr std::size_t kBytes = std::size_t{64} << 20;

  StoragePool() { entries_.reserve(kEntries + 1); }  // put() never reallocates

  // Keeps v's storage (leaving v empty) if it is large enough; otherwise leaves v alone.
  void put(std::vector<float>& v) {
    if (v.size() < kMinFloats) return;
    const std::lock_guard lock(mutex_);
    bytes_ += v.capacity() * sizeof(float);
    entries_.push_back(std::move(v));
    while (entries_.size() > kEntries || bytes_ > kBytes) {
      bytes_ -= entries_.front().capacity() * sizeof(float);
      entries_.erase(entries_.begin());
    }
  }

  // n floats with unspecified values (zeros when nothing fits).
  std::vector<float> take(std::size_t n) {
    if (n >= kMinFloats) {
      const std::lock_guard lock(mutex_);
      for (std::size_t i = entries_.size(); i-- > 0;) {
        if (entries_[i].size() != n) continue;
        std::vector<float> v = std::move(entries_[i]);
        entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
        bytes_ -= v.capacity() * sizeof(float);
        return v;
      }
    }
    return std::vector<float>(n);
  }

 private:
  std::mutex mutex_;
  std::vector<std::vector<float>> entries_;  // oldest first
  std::size_t bytes_ = 0;
};

// Never destroyed: tensors with static storage duration may be destroyed after it would be.
StoragePool& pool() {
  static auto* p = new StoragePool;
  return *p;
}

}  // namespace

std::size_t shape_size(const Shape& shape) {
  std::size_t n = 1;
  for (const std::size_t d : shape) n *= d;
  return n;
}

std::string to_string(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Tensor::Tensor(Shape shape, float fill) : shape_(std::move(shape)) {
  // Value-initialized floats (+0) are filled by memset, which is faster than a loop storing
  // `fill`; most tensors start at zero.
  if (fill == 0.0f && !std::signbit(fill)) {
    data_.resize(shape_size(shape_));
  } else {
    data_.assign(shape_size(shape_), fill);
  }
}

Tensor::Tensor(Shape shape, std::vector<float> values) : shape_(std::move(shape)), data_(std::move(values)) {
  if (data_.size() != shape_size(shape_)) {
    throw std::invalid_argument("tensor of shape " + to_string(shape_) + " needs " + std::to_string(shape_size(shape_)) +
                                " values, got " + std::to_string(data_.size()));
  }
}

Tensor Tensor::uninitialized(Shape shape) {
  const std::size_t n = shape_size(shape);
  return Tensor(std::move(shape), pool().take(n));
}

Tensor::~Tensor() { pool().put(data_); }

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    pool().put(data_);
    shape_ = std::move(other.shape_);
    data_ = std::move(other.data_);
  }
  return *this;
}

std::size_t Tensor::dim(std::size_t i) const {
  if (i >= shape_.size()) {
    throw std::out_of_range("dimension " + std::to_string(i) + " of a tensor of shape " + to_string(shape_));
  }
  return shape_[i];
}

void Tensor::reshape(Shape shape) {
  if (shape_size(shape) != data_.size()) {
    throw std::invalid_argument("cannot reshape a tensor of shape " + to_string(shape_) + " to " + to_string(shape));
  }
  shape_ = std::move(shape);
}

void Tensor::fill(float v) { std::fill(data_.begin(), data_.end(), v); }

}  // namespace mpsim
