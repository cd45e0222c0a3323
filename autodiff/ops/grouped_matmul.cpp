#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "autodiff/ops/permutation.h"
#include "kernels/grouped_matmul.h"

namespace remoe::ops {
using namespace detail;

Tensor grouped_matmul(const Tensor& x, const Tensor& w, const Permutation& perm) {
  constexpr const char* op = "grouped_matmul";
  check_ndim(op, {"x", x}, 2);
  check_ndim(op, {"w", w}, 3);
  check_same(op, {{"x", x}, {"w", w}});
  check_permutation(op, perm);
  REMOE_CHECK(x.device() == perm.row_of.device(), op, ": x on ", device_name(x.device()),
              ", the permutation on ", device_name(perm.row_of.device()));
  const int64_t E = perm.expert_offsets.dim(0) - 1, N = perm.n_rows;
  check_dim(op, {"w", w}, 0, E, "experts of perm.expert_offsets");
  check_dim(op, {"x", x}, 0, N, "routed rows perm.n_rows");
  const int64_t k_in = w.dim(2), n_out = w.dim(1);
  REMOE_CHECK(x.dim(1) == k_in, op, ": x ", shape_str(x.shape()), " has ", x.dim(1),
              " columns but w ", shape_str(w.shape()), " expects k_in = ", k_in);

  Tensor y = Tensor::empty({N, n_out}, x.dtype(), x.device());
  const Tensor offsets = perm.expert_offsets;
  if (on_gpu(x)) {
    REMOE_CHECK(E <= cuda::kGroupedMatmulMaxGroups, op, ": the CUDA kernel takes up to ",
                cuda::kGroupedMatmulMaxGroups, " experts, got ", E);
    dispatch_cuda(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::grouped_matmul_forward(y.cuda_data<T>(), x.cuda_data<T>(), w.cuda_data<T>(),
                                   offsets.cuda_data<int32_t>(), E, k_in, n_out, N, stream());
    });
  } else {
    dispatch_float(op, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::grouped_matmul_forward(y.data<T>(), x.data<T>(), w.data<T>(), offsets.data<int32_t>(),
                                  E, k_in, n_out);
    });
  }
  record(op, {x, w}, {y}, [=] {
    Tensor dx = grad_buffer(x);
    Tensor dw = grad_buffer(w);
    if (on_gpu(x))
      dispatch_cuda(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::grouped_matmul_backward(data_or_null<T>(dx), data_or_null<T>(dw),
                                      y.grad().cuda_data<T>(), x.cuda_data<T>(), w.cuda_data<T>(),
                                      offsets.cuda_data<int32_t>(), E, k_in, n_out, N, stream());
      });
    else
      dispatch_float(op, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::grouped_matmul_backward(data_or_null<T>(dx), data_or_null<T>(dw),
                                     y.grad().data<T>(), x.data<T>(), w.data<T>(),
                                     offsets.data<int32_t>(), E, k_in, n_out);
      });
    if (dx.defined()) accumulate_grad(x, dx);
    if (dw.defined()) accumulate_grad(w, dw);
  });
  return y;
}

}  // namespace remoe::ops
