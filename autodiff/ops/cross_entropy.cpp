#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/cross_entropy.h"

namespace remoe::ops {
using namespace detail;

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  constexpr const char* op = "cross_entropy";
  check_ndim(op, {"logits", logits}, 2);
  check_ndim(op, {"targets", targets}, 1);
  check_dtype(op, {"targets", targets}, DType::i32);
  REMOE_CHECK(targets.device() == logits.device(), op, ": logits on ",
              device_name(logits.device()), ", targets on ", device_name(targets.device()));
  const int64_t n_tokens = logits.dim(0), vocab = logits.dim(1);
  check_dim(op, {"targets", targets}, 0, n_tokens, "T, the rows of logits");
  REMOE_CHECK(vocab > 0, op, ": logits ", shape_str(logits.shape()), " has an empty vocabulary");
  // NOTE: on the GPU this reads the targets back (T int32, one synchronisation).
  check_ids(op, "target", targets, vocab, /*allow_ignore=*/true);

  const Device dev = logits.device();
  Tensor loss = Tensor::empty({}, logits.dtype(), dev);
  Tensor lse = Tensor::empty({n_tokens}, logits.dtype(), dev);
  if (on_gpu(logits))
    dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
      cuda::cross_entropy_forward(loss.cuda_data<float>(), lse.cuda_data<float>(),
                                  logits.cuda_data<float>(), targets.cuda_data<int32_t>(),
                                  n_tokens, vocab, stream());
    });
  else
    dispatch_float(op, logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::cross_entropy_forward(loss.data<T>(), lse.data<T>(), logits.data<T>(),
                                 targets.data<int32_t>(), n_tokens, vocab);
    });
  record(op, {logits}, {loss}, [=] {
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), dev);
    if (on_gpu(logits))
      dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
        cuda::cross_entropy_backward(dlogits.cuda_data<float>(), loss.grad().cuda_data<float>(),
                                     logits.cuda_data<float>(), lse.cuda_data<float>(),
                                     targets.cuda_data<int32_t>(), n_tokens, vocab, stream());
      });
    else
      dispatch_float(op, logits.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::cross_entropy_backward(dlogits.data<T>(), loss.grad().data<T>(), logits.data<T>(),
                                    lse.data<T>(), targets.data<int32_t>(), n_tokens, vocab);
      });
    accumulate_grad(logits, dlogits);
  });
  return loss;
}

}  // namespace remoe::ops
