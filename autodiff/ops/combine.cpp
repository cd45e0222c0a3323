#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "autodiff/ops/permutation.h"
#include "kernels/combine.h"

namespace remoe::ops {
using namespace detail;

Tensor combine(const Tensor& expert_out, const Tensor& gates, const Permutation& perm) {
  constexpr const char* op = "combine";
  check_ndim(op, {"expert_out", expert_out}, 2);
  check_ndim(op, {"gates", gates}, 2);
  // On the GPU the gates stay f32 (the router's precision) under bf16 rows.
  if (on_gpu(expert_out) && expert_out.dtype() == DType::bf16)
    check_dtype(op, {"gates", gates}, DType::f32);
  else
    check_same(op, {{"expert_out", expert_out}, {"gates", gates}});
  check_permutation(op, perm);
  REMOE_CHECK(expert_out.device() == gates.device() && gates.device() == perm.row_of.device(),
              op, ": expert_out, gates and the permutation must live on one device");
  const int64_t n_tokens = perm.row_of.dim(0), n_experts = perm.row_of.dim(1);
  const int64_t n_rows = perm.n_rows;
  REMOE_CHECK(gates.shape() == perm.row_of.shape(), op, ": gates ", shape_str(gates.shape()),
              " must match perm.row_of ", shape_str(perm.row_of.shape()), " (tokens, experts)");
  check_dim(op, {"expert_out", expert_out}, 0, n_rows, "routed rows perm.n_rows");
  const int64_t d = expert_out.dim(1);

  Tensor y = Tensor::empty({n_tokens, d}, expert_out.dtype(), expert_out.device());
  const Tensor row_of = perm.row_of;
  if (on_gpu(y))
    dispatch_cuda(op, y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cuda::combine_forward(y.cuda_data<T>(), expert_out.cuda_data<T>(), gates.cuda_data<float>(),
                            row_of.cuda_data<int32_t>(), n_tokens, n_experts, d, stream());
    });
  else
    dispatch_float(op, y.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::combine_forward(y.data<T>(), expert_out.data<T>(), gates.data<T>(),
                           row_of.data<int32_t>(), n_tokens, n_experts, d);
    });
  record(op, {expert_out, gates}, {y}, [=] {
    Tensor dout = grad_buffer(expert_out);
    Tensor dgates = grad_buffer(gates);
    if (on_gpu(y))
      dispatch_cuda(op, y.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cuda::combine_backward(data_or_null<T>(dout), data_or_null<float>(dgates),
                               y.grad().cuda_data<T>(), expert_out.cuda_data<T>(),
                               gates.cuda_data<float>(), row_of.cuda_data<int32_t>(), n_tokens,
                               n_experts, d, n_rows, stream());
      });
    else
      dispatch_float(op, y.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::combine_backward(data_or_null<T>(dout), data_or_null<T>(dgates), y.grad().data<T>(),
                              expert_out.data<T>(), gates.data<T>(), row_of.data<int32_t>(),
                              n_tokens, n_experts, d, n_rows);
      });
    if (dout.defined()) accumulate_grad(expert_out, dout);
    if (dgates.defined()) accumulate_grad(gates, dgates);
  });
  return y;
}

}  // namespace remoe::ops
