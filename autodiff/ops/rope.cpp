#include <cmath>

#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/rope.h"

namespace remoe::ops {
using namespace detail;

Tensor rope(const Tensor& x, double base) {
  constexpr const char* op = "rope";
  check_ndim(op, {"x", x}, 4);
  const int64_t batch = x.dim(0), seq = x.dim(1), heads = x.dim(2), head_dim = x.dim(3);
  REMOE_CHECK(head_dim > 0 && head_dim % 2 == 0, op, ": the head dimension Dh of x ",
              shape_str(x.shape()), " (B, S, H, Dh) must be even and positive, got ", head_dim);
  REMOE_CHECK(std::isfinite(base) && base > 0, op, ": base must be finite and > 0, got ", base);

  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (on_gpu(x))
    dispatch_cuda(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::rope_forward(y.cuda_data<T>(), x.cuda_data<T>(), batch, seq, heads, head_dim, base,
                         stream());
    });
  else
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::rope_forward(y.data<T>(), x.data<T>(), batch, seq, heads, head_dim, base);
    });
  record(op, {x}, {y}, [=] {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (on_gpu(x))
      dispatch_cuda(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::rope_backward(dx.cuda_data<T>(), y.grad().cuda_data<T>(), batch, seq, heads,
                            head_dim, base, stream());
      });
    else
      dispatch_float(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::rope_backward(dx.data<T>(), y.grad().data<T>(), batch, seq, heads, head_dim, base);
      });
    accumulate_grad(x, dx);
  });
  return y;
}

}  // namespace remoe::ops
