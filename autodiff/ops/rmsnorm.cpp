#include <cmath>

#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/rmsnorm.h"

namespace remoe::ops {
using namespace detail;

Tensor rmsnorm(const Tensor& x, const Tensor& w, double eps) {
  constexpr const char* op = "rmsnorm";
  check_defined(op, {"x", x});
  REMOE_CHECK(x.ndim() >= 1, op, ": x must have at least 1 dimension (.., d), got ",
              shape_str(x.shape()));
  check_ndim(op, {"w", w}, 1);
  // On the GPU the norm weight stays an f32 master parameter under bf16 activations.
  if (on_gpu(x) && x.dtype() == DType::bf16)
    check_dtype(op, {"w", w}, DType::f32);
  else
    check_same(op, {{"x", x}, {"w", w}});
  REMOE_CHECK(w.device() == x.device(), op, ": x on ", device_name(x.device()), ", w on ",
              device_name(w.device()));
  const int64_t dim = x.dim(-1);
  REMOE_CHECK(dim > 0, op, ": x ", shape_str(x.shape()), " has an empty last dimension");
  REMOE_CHECK(w.dim(0) == dim, op, ": w ", shape_str(w.shape()),
              " must match the last dimension of x ", shape_str(x.shape()));
  REMOE_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  const int64_t rows = x.numel() / dim;

  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, w.dtype(), x.device());
  if (on_gpu(x))
    dispatch_cuda(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::rmsnorm_forward(y.cuda_data<T>(), rstd.cuda_data<float>(), x.cuda_data<T>(),
                            w.cuda_data<float>(), rows, dim, eps, stream());
    });
  else
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::rmsnorm_forward(y.data<T>(), rstd.data<T>(), x.data<T>(), w.data<T>(), rows, dim, eps);
    });
  record(op, {x, w}, {y}, [=] {
    Tensor dx = grad_buffer(x);
    Tensor dw = grad_buffer(w);
    if (on_gpu(x))
      dispatch_cuda(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::rmsnorm_backward(data_or_null<T>(dx), data_or_null<float>(dw),
                               y.grad().cuda_data<T>(), x.cuda_data<T>(), w.cuda_data<float>(),
                               rstd.cuda_data<float>(), rows, dim, stream());
      });
    else
      dispatch_float(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::rmsnorm_backward(data_or_null<T>(dx), data_or_null<T>(dw), y.grad().data<T>(),
                              x.data<T>(), w.data<T>(), rstd.data<T>(), rows, dim);
      });
    if (dx.defined()) accumulate_grad(x, dx);
    if (dw.defined()) accumulate_grad(w, dw);
  });
  return y;
}

}  // namespace remoe::ops
