#include "autodiff/ops/routing_util.h"
#include "kernels/expert_choice.h"

namespace remoe::ops {
using namespace detail;

Routing expert_choice_router(const Tensor& logits, int64_t capacity) {
  constexpr const char* op = "expert_choice_router";
  check_logits(op, logits);
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  REMOE_CHECK(capacity >= 0, op, ": capacity must be >= 0, got ", capacity, " (logits ",
              shape_str(logits.shape()), ")");
  const Device dev = logits.device();
  Routing r = empty_routing(n_tokens, n_experts, logits.dtype(), dev);
  r.probs = Tensor::empty({n_tokens, n_experts}, logits.dtype(), dev);
  if (on_gpu(logits)) {
    REMOE_CHECK(n_experts <= cuda::kTopkMaxExperts, op, ": the CUDA backward takes up to ",
                cuda::kTopkMaxExperts, " experts, got E = ", n_experts);
    dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
      cuda::expert_choice_router_forward(r.gates.cuda_data<float>(), r.probs.cuda_data<float>(),
                                         stats_of<float>(r), logits.cuda_data<float>(), n_tokens,
                                         n_experts, capacity, stream());
    });
  } else {
    dispatch_float(op, logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::expert_choice_router_forward(r.gates.data<T>(), r.probs.data<T>(), stats_of<T>(r),
                                        logits.data<T>(), n_tokens, n_experts, capacity);
    });
  }
  const Tensor gates = r.gates, probs = r.probs, mask = r.mask;
  record(op, {logits}, {gates, probs}, [=] {
    const Tensor dgates = gates.grad(), dprobs = probs.grad();
    if (!dgates.defined() && !dprobs.defined()) return;
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), dev);
    if (on_gpu(logits))
      dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
        cuda::expert_choice_router_backward(dlogits.cuda_data<float>(), data_or_null<float>(dgates),
                                            data_or_null<float>(dprobs), probs.cuda_data<float>(),
                                            mask.cuda_data<int32_t>(), n_tokens, n_experts,
                                            stream());
      });
    else
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
