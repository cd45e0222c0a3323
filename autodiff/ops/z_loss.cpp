#include "autodiff/ops/routing_util.h"
#include "kernels/z_loss.h"

namespace remoe::ops {
using namespace detail;

Tensor z_loss(const Tensor& logits, double coeff) {
  constexpr const char* op = "z_loss";
  check_logits(op, logits);
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);

  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  if (on_gpu(logits))
    dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
      cuda::z_loss_forward(loss.cuda_data<float>(), logits.cuda_data<float>(), n_tokens,
                           n_experts, coeff, stream());
    });
  else
    dispatch_float(op, logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::z_loss_forward(loss.data<T>(), logits.data<T>(), n_tokens, n_experts, coeff);
    });
  record(op, {logits}, {loss}, [=] {
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    if (on_gpu(logits))
      dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
        cuda::z_loss_backward(dlogits.cuda_data<float>(), loss.grad().cuda_data<float>(),
                              logits.cuda_data<float>(), n_tokens, n_experts, coeff, stream());
      });
    else
      dispatch_float(op, logits.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::z_loss_backward(dlogits.data<T>(), loss.grad().data<T>(), logits.data<T>(),
                             n_tokens, n_experts, coeff);
      });
    accumulate_grad(logits, dlogits);
  });
  return loss;
}

}  // namespace remoe::ops
