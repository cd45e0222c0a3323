// Shared by the op implementations in ops/: argument checks whose errors name the op, the
// argument and its shape, and dispatch from a runtime dtype to a kernel template.
#pragma once

#include <initializer_list>

#include "autodiff/tape.h"
#include "autodiff/tensor.h"

namespace remoe::ops::detail {

// An op argument with its name, for error messages: {"x", x}.
struct Arg {
  const char* name;
  const Tensor& t;
};

std::string describe(const Arg& a);  // "x (3, 4) f32"

void check_defined(const char* op, const Arg& a);
void check_ndim(const char* op, const Arg& a, int64_t ndim);
void check_dtype(const char* op, const Arg& a, DType dtype);
// All of `args` have the same dtype and the same device (the first one's).
void check_same(const char* op, std::initializer_list<Arg> args);
// The dimension of `a` at `i` equals `expected`, which `what` describes ("d_model of w").
void check_dim(const char* op, const Arg& a, int64_t i, int64_t expected, const char* what);
// Until the CUDA backend lands every op runs on the CPU; this names the op that has no kernel.
void check_cpu(const char* op, std::initializer_list<Arg> args);

// A buffer for the gradient of x when x requires grad, else an undefined tensor; with
// data_or_null, a backward rule passes nullptr for the gradients nobody needs (kernels skip
// null outputs).
inline Tensor grad_buffer(const Tensor& x) {
  return x.requires_grad() ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
}
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Calls f(T{}) with T = float or double from a runtime dtype; anything else is an error.
template <typename F>
void dispatch_float(const char* op, DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    default:
      REMOE_FAIL(op, ": dtype ", dtype_name(dtype),
                 " is not supported by the CPU kernels (f32 and f64 are; cast bf16 first)");
  }
}

}  // namespace remoe::ops::detail
