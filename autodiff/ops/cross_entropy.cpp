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
  check_cpu(op, {{"logits", logits}, {"targets", targets}});
  const int64_t n_tokens = logits.dim(0), vocab = logits.dim(1);
  check_dim(op, {"targets", targets}, 0, n_tokens, "T, the rows of logits");
  REMOE_CHECK(vocab > 0, op, ": logits ", shape_str(logits.shape()), " has an empty vocabulary");
  const int32_t* tgt = targets.data<int32_t>();
  for (int64_t t = 0; t < n_tokens; ++t)
    REMOE_CHECK(tgt[t] >= -1 && tgt[t] < vocab, op, ": target ", tgt[t], " at position ", t,
                " is outside [0, ", vocab, ") and is not -1 (ignore)");

  Tensor loss = Tensor::empty({}, logits.dtype());
  Tensor lse = Tensor::empty({n_tokens}, logits.dtype());
  dispatch_float(op, logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::cross_entropy_forward(loss.data<T>(), lse.data<T>(), logits.data<T>(), tgt, n_tokens,
                               vocab);
  });
  record(op, {logits}, {loss}, [=] {
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype());
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
