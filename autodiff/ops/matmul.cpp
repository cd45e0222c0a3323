#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/matmul.h"

namespace remoe::ops {
using namespace detail;

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  constexpr const char* op = "matmul";
  check_ndim(op, {"a", a}, 2);
  check_ndim(op, {"b", b}, 2);
  check_same(op, {{"a", a}, {"b", b}});
  const int64_t M = trans_a ? a.dim(1) : a.dim(0);
  const int64_t K = trans_a ? a.dim(0) : a.dim(1);
  const int64_t N = trans_b ? b.dim(0) : b.dim(1);
  const int64_t Kb = trans_b ? b.dim(1) : b.dim(0);
  REMOE_CHECK(K == Kb, op, ": inner dimensions differ: a ", shape_str(a.shape()),
              trans_a ? "ᵀ" : "", " · b ", shape_str(b.shape()), trans_b ? "ᵀ" : "", " (", K,
              " vs ", Kb, ")");

  Tensor c = Tensor::empty({M, N}, a.dtype(), a.device());
  if (on_gpu(a))
    dispatch_cuda(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::matmul_forward(c.cuda_data<T>(), a.cuda_data<T>(), b.cuda_data<T>(), M, N, K, trans_a,
                           trans_b, stream());
    });
  else
    dispatch_float(op, a.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::matmul_forward(c.data<T>(), a.data<T>(), b.data<T>(), M, N, K, trans_a, trans_b);
    });
  record(op, {a, b}, {c}, [=] {
    const Tensor dc = c.grad();
    Tensor da = grad_buffer(a);
    Tensor db = grad_buffer(b);
    if (on_gpu(a))
      dispatch_cuda(op, a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::matmul_backward(data_or_null<T>(da), data_or_null<T>(db), dc.cuda_data<T>(),
                              a.cuda_data<T>(), b.cuda_data<T>(), M, N, K, trans_a, trans_b,
                              stream());
      });
    else
      dispatch_float(op, a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::matmul_backward(data_or_null<T>(da), data_or_null<T>(db), dc.data<T>(), a.data<T>(),
                             b.data<T>(), M, N, K, trans_a, trans_b);
      });
    if (da.defined()) accumulate_grad(a, da);
    if (db.defined()) accumulate_grad(b, db);
  });
  return c;
}

Tensor linear(const Tensor& x, const Tensor& w) { return matmul(x, w, false, true); }

}  // namespace remoe::ops
