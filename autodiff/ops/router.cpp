#include "autodiff/ops/routing_util.h"

namespace remoe::ops {
using namespace detail;


Routing relu_router(const Tensor& logits) {
  constexpr const char* op = "relu_router";
  check_logits(op, logits);
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  Routing r = empty_routing(n_tokens, n_experts, logits.dtype(), logits.device());
  if (on_gpu(logits))
    dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
      cuda::relu_router_forward(r.gates.cuda_data<float>(), stats_of<float>(r),
                                logits.cuda_data<float>(), n_tokens, n_experts, stream());
    });
  else
    dispatch_float(op, logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::relu_router_forward(r.gates.data<T>(), stats_of<T>(r), logits.data<T>(), n_tokens,
                               n_experts);
    });
  const Tensor gates = r.gates;
  record(op, {logits}, {gates}, [=] {
    const Tensor dgates = gates.grad();
    if (!dgates.defined()) return;
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    if (on_gpu(logits))
      dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
        cuda::relu_router_backward(dlogits.cuda_data<float>(), dgates.cuda_data<float>(),
                                   logits.cuda_data<float>(), n_tokens, n_experts, stream());
      });
    else
      dispatch_float(op, logits.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::relu_router_backward(dlogits.data<T>(), dgates.data<T>(), logits.data<T>(),
                                  n_tokens, n_experts);
      });
    accumulate_grad(logits, dlogits);
  });
  return r;
}

Routing topk_router(const Tensor& logits, int k, bool renormalize, const Tensor& bias) {
  constexpr const char* op = "topk_router";
  check_logits(op, logits);
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  REMOE_CHECK(k >= 1 && k <= n_experts, op, ": k = ", k, " must be in [1, E] with E = ",
              n_experts, " (logits ", shape_str(logits.shape()), ")");
  if (bias.defined()) {
    check_ndim(op, {"bias", bias}, 1);
    check_same(op, {{"logits", logits}, {"bias", bias}});
    check_dim(op, {"bias", bias}, 0, n_experts, "E of logits");
  }
  Routing r = empty_routing(n_tokens, n_experts, logits.dtype(), logits.device());
  r.probs = Tensor::empty({n_tokens, n_experts}, logits.dtype(), logits.device());
  if (on_gpu(logits)) {
    REMOE_CHECK(n_experts <= cuda::kTopkMaxExperts, op, ": the CUDA kernel takes up to ",
                cuda::kTopkMaxExperts, " experts, got E = ", n_experts);
    dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
      cuda::topk_router_forward(r.gates.cuda_data<float>(), r.probs.cuda_data<float>(),
                                stats_of<float>(r), logits.cuda_data<float>(), n_tokens,
                                n_experts, k, renormalize, data_or_null<float>(bias), stream());
    });
  } else {
    dispatch_float(op, logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::topk_router_forward(r.gates.data<T>(), r.probs.data<T>(), stats_of<T>(r),
                               logits.data<T>(), data_or_null<T>(bias), n_tokens, n_experts, k,
                               renormalize);
    });
  }
  const Tensor gates = r.gates, probs = r.probs, mask = r.mask;
  record(op, {logits}, {gates, probs}, [=] {
    const Tensor dgates = gates.grad(), dprobs = probs.grad();
    if (!dgates.defined() && !dprobs.defined()) return;
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    if (on_gpu(logits))
      dispatch_cuda_f32(op, logits.dtype(), [&](auto) {
        cuda::topk_router_backward(dlogits.cuda_data<float>(), data_or_null<float>(dgates),
                                   data_or_null<float>(dprobs), probs.cuda_data<float>(),
                                   mask.cuda_data<int32_t>(), n_tokens, n_experts, renormalize,
                                   stream());
      });
    else
      dispatch_float(op, logits.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::topk_router_backward(dlogits.data<T>(), data_or_null<T>(dgates),
                                  data_or_null<T>(dprobs), probs.data<T>(),
                                  mask.data<int32_t>(), n_tokens, n_experts, renormalize);
      });
    accumulate_grad(logits, dlogits);
  });
  return r;
}

double sparsity(const Routing& routing) {
  constexpr const char* op = "sparsity";
  check_ndim(op, {"routing.mask", routing.mask}, 2);
  check_dtype(op, {"routing.nonzero", routing.nonzero}, DType::i32);
  REMOE_CHECK(routing.nonzero.numel() == 1, op, ": routing.nonzero must have one element, got ",
              shape_str(routing.nonzero.shape()));
  const int64_t pairs = routing.mask.numel();
  REMOE_CHECK(pairs > 0, op, ": routing.mask ", shape_str(routing.mask.shape()),
              " has no (token, expert) pairs");
  return 1.0 - routing.nonzero.item() / double(pairs);
}

}  // namespace remoe::ops
