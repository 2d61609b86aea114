#include "mpsim/tensor.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mpsim {

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
