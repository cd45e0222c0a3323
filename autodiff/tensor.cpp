#include "autodiff/tensor.h"

#include <cstring>
#include <new>

#include "autodiff/device.h"
#include "kernels/elementwise.h"

namespace remoe {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::cpu ? "cpu" : "cuda"; }

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// --- Storage -------------------------------------------------------------------------

namespace {
constexpr std::align_val_t kCpuAlignment{64};  // a cache line; also what AVX-512 wants
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device == Device::cpu)
    data_ = ::operator new(bytes ? bytes : 1, kCpuAlignment);
  else
    data_ = device::cuda_alloc(bytes);
}

Storage::~Storage() {
  if (device_ == Device::cpu)
    ::operator delete(data_, kCpuAlignment);
  else
    device::cuda_free(data_);
}

// --- Tensor --------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape)
    REMOE_CHECK(d >= 0, "Tensor: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  device::zero(t.raw(), device, t.nbytes());
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, Device::cpu);
  const int64_t n = t.numel();
  switch (dtype) {
    case DType::f32: cpu::fill(t.data<float>(), float(value), n); break;
    case DType::f64: cpu::fill(t.data<double>(), value, n); break;
    case DType::bf16: cpu::fill(t.data<bf16>(), float_to_bf16(float(value)), n); break;
    case DType::i32: cpu::fill(t.data<int32_t>(), int32_t(value), n); break;
  }
  return device == Device::cpu ? t : t.to(device);
}

template <typename T>
Tensor Tensor::from_vector(const Shape& shape, const std::vector<T>& values) {
  REMOE_CHECK(int64_t(values.size()) == shape_numel(shape), "Tensor::from_vector: ",
              values.size(), " values for shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>(), Device::cpu);
  if (!values.empty()) std::memcpy(t.raw(), values.data(), values.size() * sizeof(T));
  return t;
}

const Shape& Tensor::shape() const {
  REMOE_CHECK(defined(), "use of an undefined tensor");
  return impl_->shape;
}

int64_t Tensor::dim(int64_t i) const {
  const int64_t n = ndim();
  REMOE_CHECK(i >= -n && i < n, "Tensor::dim(", i, ") on a tensor of shape ", shape_str(shape()));
  return shape()[size_t(i < 0 ? i + n : i)];
}

int64_t Tensor::numel() const { return shape_numel(shape()); }
DType Tensor::dtype() const { return (void)shape(), impl_->dtype; }
Device Tensor::device() const { return (void)shape(), impl_->storage->device(); }
void* Tensor::raw() const { return (void)shape(), impl_->storage->data(); }

template <typename T>
T* Tensor::data() const {
  REMOE_CHECK(dtype() == dtype_of<T>(), "Tensor::data: tensor ", shape_str(shape()), " is ",
              dtype_name(dtype()), ", accessed as ", dtype_name(dtype_of<T>()));
  REMOE_CHECK(device() == Device::cpu, "Tensor::data: tensor ", shape_str(shape()),
              " lives on the GPU; copy it with .to(Device::cpu) first");
  return static_cast<T*>(raw());
}

template <typename T>
T* Tensor::cuda_data() const {
  REMOE_CHECK(dtype() == dtype_of<T>(), "Tensor::cuda_data: tensor ", shape_str(shape()), " is ",
              dtype_name(dtype()), ", accessed as ", dtype_name(dtype_of<T>()));
  REMOE_CHECK(device() == Device::cuda, "Tensor::cuda_data: tensor ", shape_str(shape()),
              " lives on the CPU; copy it with .to(Device::cuda) first");
  return static_cast<T*>(raw());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  REMOE_CHECK(dtype() == dtype_of<T>(), "Tensor::to_vector: tensor is ", dtype_name(dtype()),
              ", read as ", dtype_name(dtype_of<T>()));
  std::vector<T> out(static_cast<size_t>(numel()));
  device::copy(out.data(), Device::cpu, raw(), device(), nbytes());
  return out;
}

double Tensor::item() const {
  REMOE_CHECK(numel() == 1, "Tensor::item: tensor of shape ", shape_str(shape()),
              " has ", numel(), " elements, expected 1");
  switch (dtype()) {
    case DType::f32: return to_vector<float>()[0];
    case DType::f64: return to_vector<double>()[0];
    case DType::bf16: return bf16_to_float(to_vector<bf16>()[0]);
    case DType::i32: return to_vector<int32_t>()[0];
  }
  return 0;
}

Tensor Tensor::to(Device target) const {
  Tensor t = empty(shape(), dtype(), target);
  device::copy(t.raw(), target, raw(), device(), nbytes());
  return t;
}

Tensor Tensor::clone() const { return to(device()); }

void Tensor::move_to(Device target) const {
  if (target == device()) return;
  REMOE_CHECK(!impl_->grad, "Tensor::move_to: tensor '", name(), "' ", shape_str(shape()),
              " has a gradient; move it before the first backward pass");
  impl_->storage = to(target).impl_->storage;
}

bool Tensor::same_storage(const Tensor& other) const {
  return defined() && other.defined() && impl_->storage == other.impl_->storage;
}

bool Tensor::requires_grad() const { return defined() && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool value) {
  REMOE_CHECK(!value || dtype() == DType::f32 || dtype() == DType::f64 || dtype() == DType::bf16,
              "set_requires_grad: only floating-point tensors have gradients (this one is ",
              dtype_name(dtype()), ")");
  impl_->requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const { return defined() && impl_->grad ? Tensor(impl_->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& grad) const {
  REMOE_CHECK(defined(), "set_grad on an undefined tensor");
  if (grad.defined())
    REMOE_CHECK(grad.shape() == shape() && grad.dtype() == dtype(),
                "set_grad: gradient ", shape_str(grad.shape()), " ", dtype_name(grad.dtype()),
                " does not match tensor ", shape_str(shape()), " ", dtype_name(dtype()));
  impl_->grad = grad.defined() ? grad.impl_ : nullptr;
}

void Tensor::zero_grad() const {
  if (defined()) impl_->grad.reset();
}

const std::string& Tensor::name() const { return (void)shape(), impl_->name; }

Tensor& Tensor::set_name(std::string name) {
  (void)shape();
  impl_->name = std::move(name);
  return *this;
}

Tensor make_view(const Tensor& t, const Shape& shape) {
  REMOE_CHECK(shape_numel(shape) == t.numel(), "reshape: cannot view ", shape_str(t.shape()),
              " (", t.numel(), " elements) as ", shape_str(shape));
  return prefix_view(t, shape);
}

Tensor prefix_view(const Tensor& t, const Shape& shape) {
  REMOE_CHECK(shape_numel(shape) <= t.numel(), "prefix_view: ", shape_str(shape), " needs ",
              shape_numel(shape), " elements, more than ", shape_str(t.shape()), " holds");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = t.dtype();
  impl->storage = t.impl()->storage;
  return Tensor(std::move(impl));
}

#define REMOE_TENSOR_TYPED(T)                                                   \
  template Tensor Tensor::from_vector<T>(const Shape&, const std::vector<T>&); \
  template T* Tensor::data<T>() const;                                         \
  template T* Tensor::cuda_data<T>() const;                                    \
  template std::vector<T> Tensor::to_vector<T>() const;
REMOE_TENSOR_TYPED(float)
REMOE_TENSOR_TYPED(double)
REMOE_TENSOR_TYPED(bf16)
REMOE_TENSOR_TYPED(int32_t)
#undef REMOE_TENSOR_TYPED

}  // namespace remoe
