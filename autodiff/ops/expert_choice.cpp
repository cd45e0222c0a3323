#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/expert_choice.h"

namespace remoe::ops {
using namespace detail;

Routing expert_choice_router(const Tensor& logits, int64_t capacity) {
  constexpr const char* op = "expert_choice_router";
  check_ndim(op, {"logits", logits}, 2);
  REMOE_CHECK(logits.dtype() == DType::f32 || logits.dtype() == DType::f64, op,
              ": logits must be f32 or f64, got ", describe({"logits", logits}));
  check_cpu(op, {{"logits", logits}});
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  REMOE_CHECK(n_experts >= 1, op, ": logits ", shape_str(logits.shape()), " has no experts (E = 0)");
  REMOE_CHECK(capacity >= 0, op, ": capacity must be >= 0, got ", capacity, " (logits ",
              shape_str(logits.shape()), ")");
  Routing r;
  r.gates = Tensor::empty({n_tokens, n_experts}, logits.dtype());
  r.probs = Tensor::empty({n_tokens, n_experts}, logits.dtype());
  r.mask = Tensor::empty({n_tokens, n_experts}, DType::i32);
  r.expert_counts = Tensor::empty({n_experts}, DType::i32);
  r.score_sums = Tensor::empty({n_experts}, logits.dtype());
  r.token_counts = Tensor::empty({n_tokens}, DType::i32);
  r.nonzero = Tensor::empty({}, DType::i32);
  dispatch_float(op, logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const cpu::RouterStats<T> stats{r.mask.data<int32_t>(), r.expert_counts.data<int32_t>(),
                                    r.score_sums.data<T>(), r.token_counts.data<int32_t>(),
                                    r.nonzero.data<int32_t>()};
    cpu::expert_choice_router_forward(r.gates.data<T>(), r.probs.data<T>(), stats,
                                      logits.data<T>(), n_tokens, n_experts, capacity);
  });
  const Tensor gates = r.gates, probs = r.probs, mask = r.mask;
  record(op, {logits}, {gates, probs}, [=] {
    const Tensor dgates = gates.grad(), dprobs = probs.grad();
    if (!dgates.defined() && !dprobs.defined()) return;
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype());
    dispatch_float(op, logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::expert_choice_router_backward(dlogits.data<T>(), data_or_null<T>(dgates),
                                         data_or_null<T>(dprobs), probs.data<T>(),
                                         mask.data<int32_t>(), n_tokens, n_experts);
    });
    accumulate_grad(logits, dlogits);
  });
  return r;
}

}  // namespace remoe::ops
