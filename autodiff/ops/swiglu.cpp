#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/swiglu.h"

namespace remoe::ops {
using namespace detail;

Tensor swiglu(const Tensor& a, const Tensor& b) {
  constexpr const char* op = "swiglu";
  check_same(op, {{"a", a}, {"b", b}});
  check_cpu(op, {{"a", a}, {"b", b}});
  REMOE_CHECK(a.shape() == b.shape(), op, ": shapes differ: a ", shape_str(a.shape()), ", b ",
              shape_str(b.shape()));

  Tensor h = Tensor::empty(a.shape(), a.dtype());
  dispatch_float(op, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::swiglu_forward(h.data<T>(), a.data<T>(), b.data<T>(), h.numel());
  });
  record(op, {a, b}, {h}, [=] {
    Tensor da = a.requires_grad() ? Tensor::empty(a.shape(), a.dtype()) : Tensor();
    Tensor db = b.requires_grad() ? Tensor::empty(b.shape(), b.dtype()) : Tensor();
    dispatch_float(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_backward(da.defined() ? da.data<T>() : nullptr,
                           db.defined() ? db.data<T>() : nullptr, h.grad().data<T>(),
                           a.data<T>(), b.data<T>(), h.numel());
    });
    if (da.defined()) accumulate_grad(a, da);
    if (db.defined()) accumulate_grad(b, db);
  });
  return h;
}

}  // namespace remoe::ops
