#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/elementwise.h"

namespace remoe::ops {
using namespace detail;

Tensor add(const Tensor& a, const Tensor& b) {
  constexpr const char* op = "add";
  check_same(op, {{"a", a}, {"b", b}});
  check_cpu(op, {{"a", a}, {"b", b}});
  REMOE_CHECK(a.shape() == b.shape(), op, ": shapes differ: a ", shape_str(a.shape()), ", b ",
              shape_str(b.shape()));
  Tensor y = Tensor::empty(a.shape(), a.dtype());
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
  check_cpu(op, {{"y", y}, {"x", x}});
  REMOE_CHECK(y.shape() == x.shape(), op, ": shapes differ: y ", shape_str(y.shape()), ", x ",
              shape_str(x.shape()));
  dispatch_float(op, y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::add_inplace(y.data<T>(), x.data<T>(), y.numel());
  });
}

Tensor scale(const Tensor& x, double s) {
  constexpr const char* op = "scale";
  check_defined(op, {"x", x});
  check_cpu(op, {{"x", x}});
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::scale_forward(y.data<T>(), x.data<T>(), s, y.numel());
  });
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
}  // namespace

Tensor cast(const Tensor& x, DType dtype) {
  constexpr const char* op = "cast";
  check_defined(op, {"x", x});
  check_cpu(op, {{"x", x}});
  Tensor y = Tensor::empty(x.shape(), dtype);
  switch (x.dtype()) {
    case DType::f32: cast_from<float>(y, x); break;
    case DType::f64: cast_from<double>(y, x); break;
    case DType::bf16: cast_from<bf16>(y, x); break;
    default: REMOE_FAIL(op, ": from ", dtype_name(x.dtype()), " is not supported (f32, f64, bf16)");
  }
  const DType from = x.dtype();
  record(op, {x}, {y}, [=] { accumulate_grad(x, cast(y.grad(), from)); });
  return y;
}

}  // namespace remoe::ops
