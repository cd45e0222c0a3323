// Shared by the op implementations in ops/: argument checks whose errors name the op, the
// argument and its shape, and dispatch from a runtime dtype to a kernel template.
#pragma once

#include <initializer_list>

#include "autodiff/tape.h"
#include "autodiff/tensor.h"
#include "kernels/stream.h"

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

// ids: 1-D i32 token ids (or targets) in [0, n), or −1 when allow_ignore; errors name the op,
// the value and its position ("target 7 at position 1 …"), `what` being "id" or "target". On
// the GPU the ids are read back (T int32, one synchronisation).
void check_ids(const char* op, const char* what, const Tensor& ids, int64_t n, bool allow_ignore);

// --- device dispatch ----------------------------------------------------------------------
// An op runs where its first tensor argument lives (check_same keeps the others there too):
//   if (on_gpu(x)) dispatch_cuda(op, x.dtype(), [&](auto tag) { cuda::…(…, stream()); });
//   else dispatch_float(op, x.dtype(), [&](auto tag) { cpu::…(…); });
// The CUDA branch is a generic lambda that only a CUDA build instantiates, so the op layer
// needs no #ifdef and a CPU-only build links no CUDA launcher.
inline bool on_gpu(const Tensor& t) { return t.device() == Device::cuda; }
cudaStream_t stream();  // remoe's stream (device::cuda_stream)
[[noreturn]] void fail_no_cuda(const char* op);

// The typed pointer a kernel takes, on either device.
template <typename T>
T* ptr(const Tensor& t) {
  return t.device() == Device::cpu ? t.data<T>() : t.cuda_data<T>();
}

// A buffer for the gradient of x when x requires grad, else an undefined tensor; with
// data_or_null, a backward rule passes nullptr for the gradients nobody needs (kernels skip
// null outputs).
inline Tensor grad_buffer(const Tensor& x) {
  return x.requires_grad() ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
}
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
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

// Calls f(T{}) with T = float or bf16, the CUDA kernels' storage types.
template <typename F>
void dispatch_cuda(const char* op, DType dtype, F&& f) {
#ifdef REMOE_CUDA
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(bf16{}); return;
    default:
      REMOE_FAIL(op, ": dtype ", dtype_name(dtype),
                 " is not supported by the CUDA kernels (f32 and bf16 are)");
  }
#else
  (void)dtype, (void)f;
  fail_no_cuda(op);
#endif
}

// Calls f(0) in a CUDA build, for the launchers that take no float type (a generic lambda,
// as above, so that a CPU-only build does not reference them).
template <typename F>
void run_cuda(const char* op, F&& f) {
#ifdef REMOE_CUDA
  (void)op;
  f(0);
#else
  (void)f;
  fail_no_cuda(op);
#endif
}

// The same for the kernels that run in f32 only (router, losses, attention, optimizer).
template <typename F>
void dispatch_cuda_f32(const char* op, DType dtype, F&& f) {
#ifdef REMOE_CUDA
  REMOE_CHECK(dtype == DType::f32, op, ": dtype ", dtype_name(dtype),
              " is not supported by the CUDA kernel (f32 only)");
  f(float{});
#else
  (void)dtype, (void)f;
  fail_no_cuda(op);
#endif
}

}  // namespace remoe::ops::detail
