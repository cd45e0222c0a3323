#include "autodiff/device.h"
#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/elementwise.h"
#include "kernels/grad_norm.h"

namespace remoe::ops {
using namespace detail;

Tensor add(const Tensor& a, const Tensor& b) {
  constexpr const char* op = "add";
  check_same(op, {{"a", a}, {"b", b}});
  REMOE_CHECK(a.shape() == b.shape(), op, ": shapes differ: a ", shape_str(a.shape()), ", b ",
              shape_str(b.shape()));
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (on_gpu(a))
    dispatch_cuda(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::add_forward(y.cuda_data<T>(), a.cuda_data<T>(), b.cuda_data<T>(), y.numel(), stream());
    });
  else
    dispatch_float(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::add_forward(y.data<T>(), a.data<T>(), b.data<T>(), y.numel());
    });
  record(op, {a, b}, {y}, [=] {
    accumulate_grad(a, y.grad());
    accumulate_grad(b, y.grad());
  });
  return y;
}

void add_(const Tensor& y, const Tensor& x) {
  constexpr const char* op = "add_";
  check_same(op, {{"y", y}, {"x", x}});
  REMOE_CHECK(y.shape() == x.shape(), op, ": shapes differ: y ", shape_str(y.shape()), ", x ",
              shape_str(x.shape()));
  if (on_gpu(y))
    return dispatch_cuda(op, y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::add_inplace(y.cuda_data<T>(), x.cuda_data<T>(), y.numel(), stream());
    });
  dispatch_float(op, y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::add_inplace(y.data<T>(), x.data<T>(), y.numel());
  });
}

Tensor scale(const Tensor& x, double s) {
  constexpr const char* op = "scale";
  check_defined(op, {"x", x});
  Tensor y;
  if (on_gpu(x)) {
    y = x.clone();
    dispatch_cuda(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::scale_inplace(y.cuda_data<T>(), s, y.numel(), stream());
    });
  } else {
    y = Tensor::empty(x.shape(), x.dtype());
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::scale_forward(y.data<T>(), x.data<T>(), s, y.numel());
    });
  }
  record(op, {x}, {y}, [=] { accumulate_grad(x, scale(y.grad(), s)); });
  return y;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", {"x", x});
  Tensor y = make_view(x, shape);
  record("reshape", {x}, {y}, [=] { accumulate_grad(x, make_view(y.grad(), x.shape())); });
  return y;
}

namespace {
template <typename Src>
void cast_from(const Tensor& y, const Tensor& x) {
  const Src* src = x.data<Src>();
  switch (y.dtype()) {
    case DType::f32: cpu::cast(y.data<float>(), src, x.numel()); break;
    case DType::f64: cpu::cast(y.data<double>(), src, x.numel()); break;
    case DType::bf16: cpu::cast(y.data<bf16>(), src, x.numel()); break;
    default: REMOE_FAIL("cast: to ", dtype_name(y.dtype()), " is not supported (f32, f64, bf16)");
  }
}

// On the GPU: f32 ↔ bf16 (and a copy when the dtype does not change).
void cast_cuda(const Tensor& y, const Tensor& x) {
  constexpr const char* op = "cast";
  if (y.dtype() == x.dtype()) {
    device::copy(y.raw(), Device::cuda, x.raw(), Device::cuda, x.nbytes());
  } else if (y.dtype() == DType::bf16 && x.dtype() == DType::f32) {
    run_cuda(op, [&](auto) {
      cuda::cast(y.cuda_data<bf16>(), x.cuda_data<float>(), x.numel(), stream());
    });
  } else if (y.dtype() == DType::f32 && x.dtype() == DType::bf16) {
    run_cuda(op, [&](auto) {
      cuda::cast(y.cuda_data<float>(), x.cuda_data<bf16>(), x.numel(), stream());
    });
  } else {
    REMOE_FAIL(op, ": ", dtype_name(x.dtype()), " to ", dtype_name(y.dtype()),
               " on the GPU is not supported (f32 to bf16 and back are)");
  }
}
}  // namespace

Tensor cast(const Tensor& x, DType dtype) {
  constexpr const char* op = "cast";
  check_defined(op, {"x", x});
  Tensor y = Tensor::empty(x.shape(), dtype, x.device());
  if (on_gpu(x)) {
    cast_cuda(y, x);
  } else {
    switch (x.dtype()) {
      case DType::f32: cast_from<float>(y, x); break;
      case DType::f64: cast_from<double>(y, x); break;
      case DType::bf16: cast_from<bf16>(y, x); break;
      default: REMOE_FAIL(op, ": from ", dtype_name(x.dtype()), " is not supported (f32, f64, bf16)");
    }
  }
  const DType from = x.dtype();
  record(op, {x}, {y}, [=] { accumulate_grad(x, cast(y.grad(), from)); });
  return y;
}

}  // namespace remoe::ops
