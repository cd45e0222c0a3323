// Tensor: a cheap handle (one shared_ptr) to a contiguous, row-major buffer with a shape, a
// dtype and a device, plus the autodiff fields (requires_grad, grad).
//
// Copies of a Tensor share the same buffer and the same grad: a Tensor is a reference.
// reshape() is a view (same storage). Data lives in a Storage, allocated on the CPU with
// aligned new and on the GPU with stream-ordered cudaMallocAsync from the device's pool.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/check.h"

namespace remoe {

enum class DType : uint8_t { f32, f64, bf16, i32 };
enum class Device : uint8_t { cpu, cuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* device_name(Device device);

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);  // "(3, 4)"; a scalar is "()"
int64_t shape_numel(const Shape& shape);

// Owns bytes on one device.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu);
  // A CPU tensor holding `values` (size must equal the shape's element count).
  template <typename T>
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t ndim() const { return int64_t(shape().size()); }
  int64_t dim(int64_t i) const;  // negative i counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }

  // Typed access to CPU data; checks the dtype and the device.
  template <typename T> T* data() const;
  // Typed access to GPU data for the CUDA launchers; checks the dtype and the device.
  template <typename T> T* cuda_data() const;
  void* raw() const;

  // Host copies for tests and readbacks (any device).
  template <typename T> std::vector<T> to_vector() const;
  double item() const;  // a one-element tensor's value, as double

  Tensor to(Device device) const;  // a copy on `device` (no autodiff)
  // Moves the data to `device` in place, so every handle to this tensor sees it there (views
  // made earlier do not follow). For leaves without a gradient: parameters and optimizer state.
  void move_to(Device device) const;
  Tensor clone() const;            // a copy with its own storage (no autodiff)
  bool same_storage(const Tensor& other) const;

  // Autodiff. A tensor with requires_grad set by the user is a leaf (a parameter or an input
  // under a gradient check); op outputs get it when any input has it and grad mode is on.
  bool requires_grad() const;
  Tensor& set_requires_grad(bool value);
  Tensor grad() const;  // undefined until a backward pass reaches this tensor
  void set_grad(const Tensor& grad) const;
  void zero_grad() const;  // drops the gradient (the next backward starts from zero)

  const std::string& name() const;
  Tensor& set_name(std::string name);

  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  TensorImpl* impl() const { return impl_.get(); }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  Shape shape;
  DType dtype = DType::f32;
  std::shared_ptr<Storage> storage;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::string name;
};

// A tensor sharing `t`'s storage with another shape of the same element count (no autodiff:
// ops::reshape is the differentiable view).
Tensor make_view(const Tensor& t, const Shape& shape);
// A tensor over the first shape_numel(shape) elements of `t`'s storage, at most t.numel()
// (no autodiff): a buffer sized for the worst case, cut to what a kernel wrote.
Tensor prefix_view(const Tensor& t, const Shape& shape);

}  // namespace remoe
