#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/swiglu.h"

namespace remoe::ops {
using namespace detail;

Tensor swiglu(const Tensor& a, const Tensor& b) {
  constexpr const char* op = "swiglu";
  check_same(op, {{"a", a}, {"b", b}});
  REMOE_CHECK(a.shape() == b.shape(), op, ": shapes differ: a ", shape_str(a.shape()), ", b ",
              shape_str(b.shape()));

  Tensor h = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (on_gpu(a))
    dispatch_cuda(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::swiglu_forward(h.cuda_data<T>(), a.cuda_data<T>(), b.cuda_data<T>(), h.numel(),
                           stream());
    });
  else
    dispatch_float(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_forward(h.data<T>(), a.data<T>(), b.data<T>(), h.numel());
    });
  record(op, {a, b}, {h}, [=] {
    Tensor da = grad_buffer(a);
    Tensor db = grad_buffer(b);
    if (on_gpu(a))
      dispatch_cuda(op, a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::swiglu_backward(data_or_null<T>(da), data_or_null<T>(db), h.grad().cuda_data<T>(),
                              a.cuda_data<T>(), b.cuda_data<T>(), h.numel(), stream());
      });
    else
      dispatch_float(op, a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::swiglu_backward(data_or_null<T>(da), data_or_null<T>(db), h.grad().data<T>(),
                             a.data<T>(), b.data<T>(), h.numel());
      });
    if (da.defined()) accumulate_grad(a, da);
    if (db.defined()) accumulate_grad(b, db);
  });
  return h;
}

}  // namespace remoe::ops
