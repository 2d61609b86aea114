// Tensors of the training engine: contiguous row-major float32 arrays with a shape (NCHW for
// images, [N, features] for fully connected layers), and parameters with their gradients.
// Deliberately plain: no views, no strides, no autograd; each layer owns its forward and
// backward (DESIGN.md, "Style anchors": llm.c).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace mpsim {

using Shape = std::vector<std::size_t>;

// Product of the dimensions (1 for a rank-0 shape).
std::size_t shape_size(const Shape& shape);
// "[128, 3, 32, 32]"
std::string to_string(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(Shape shape, float fill = 0.0f);
  // Throws std::invalid_argument when values.size() != shape_size(shape).
  Tensor(Shape shape, std::vector<float> values);
  // A tensor whose values are unspecified, for a result that its maker overwrites in full. A
  // large one takes the storage of a recently destroyed tensor of the same size when there is
  // one (src/nn/tensor.cpp), so that it is neither zero-filled nor page-faulted again: layers
  // make and drop tensors of the same few sizes at every training step.
  static Tensor uninitialized(Shape shape);

  // Large tensors hand their storage to uninitialized() when destroyed or assigned to.
  ~Tensor();
  Tensor(const Tensor&) = default;
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(const Tensor&) = default;
  Tensor& operator=(Tensor&& other) noexcept;

  const Shape& shape() const { return shape_; }
  std::size_t rank() const { return shape_.size(); }
  // Dimension i; throws std::out_of_range past the rank.
  std::size_t dim(std::size_t i) const;
  std::size_t size() const { return data_.size(); }
  bool empty() const { return data_.empty(); }

  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  float& operator[](std::size_t i) { return data_[i]; }
  const float& operator[](std::size_t i) const { return data_[i]; }
  const std::vector<float>& values() const { return data_; }

  // Same elements, another shape of the same size; throws std::invalid_argument otherwise.
  void reshape(Shape shape);
  void fill(float v);

 private:
  Shape shape_;
  std::vector<float> data_;
};

// A trainable tensor. `name` is its full dotted name, the key PyTorch's state_dict uses for the
// same model ("layer1.0.conv1.weight"), so checkpoints and golden values map one to one.
struct Parameter {
  std::string name;
  Tensor value;
  Tensor grad;  // same shape; backward() overwrites it (each parameter is used once per step)
};

// A non-trainable state tensor saved with the model (batch-norm running statistics).
struct Buffer {
  std::string name;
  Tensor value;
};

}  // namespace mpsim
