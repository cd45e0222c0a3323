#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/router.h"

namespace remoe::ops {
using namespace detail;

namespace {

void check_logits(const char* op, const Tensor& logits) {
  check_ndim(op, {"logits", logits}, 2);
  REMOE_CHECK(logits.dtype() == DType::f32 || logits.dtype() == DType::f64, op,
              ": logits must be f32 or f64, got ", describe({"logits", logits}));
  check_cpu(op, {{"logits", logits}});
  REMOE_CHECK(logits.dim(1) >= 1, op, ": logits ", shape_str(logits.shape()),
              " has no experts (E = 0)");
}

// Everything but gates and probs, allocated for T tokens and E experts.
Routing empty_routing(int64_t n_tokens, int64_t n_experts, DType dtype) {
  Routing r;
  r.gates = Tensor::empty({n_tokens, n_experts}, dtype);
  r.mask = Tensor::empty({n_tokens, n_experts}, DType::i32);
  r.expert_counts = Tensor::empty({n_experts}, DType::i32);
  r.score_sums = Tensor::empty({n_experts}, dtype);
  r.token_counts = Tensor::empty({n_tokens}, DType::i32);
  r.nonzero = Tensor::empty({}, DType::i32);
  return r;
}

template <typename T>
cpu::RouterStats<T> stats_of(const Routing& r) {
  return {r.mask.data<int32_t>(), r.expert_counts.data<int32_t>(), r.score_sums.data<T>(),
          r.token_counts.data<int32_t>(), r.nonzero.data<int32_t>()};
}

}  // namespace

Routing relu_router(const Tensor& logits) {
  constexpr const char* op = "relu_router";
  check_logits(op, logits);
  const int64_t n_tokens = logits.dim(0), n_experts = logits.dim(1);
  Routing r = empty_routing(n_tokens, n_experts, logits.dtype());
  dispatch_float(op, logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::relu_router_forward(r.gates.data<T>(), stats_of<T>(r), logits.data<T>(), n_tokens,
                             n_experts);
  });
  const Tensor gates = r.gates;
  record(op, {logits}, {gates}, [=] {
    const Tensor dgates = gates.grad();
    if (!dgates.defined()) return;
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype());
    dispatch_float(op, logits.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::relu_router_backward(dlogits.data<T>(), dgates.data<T>(), logits.data<T>(), n_tokens,
                                n_experts);
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
  Routing r = empty_routing(n_tokens, n_experts, logits.dtype());
  r.probs = Tensor::empty({n_tokens, n_experts}, logits.dtype());
  dispatch_float(op, logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cpu::topk_router_forward(r.gates.data<T>(), r.probs.data<T>(), stats_of<T>(r),
                             logits.data<T>(), data_or_null<T>(bias), n_tokens, n_experts, k,
                             renormalize);
  });
  const Tensor gates = r.gates, probs = r.probs, mask = r.mask;
  record(op, {logits}, {gates, probs}, [=] {
    const Tensor dgates = gates.grad(), dprobs = probs.grad();
    if (!dgates.defined() && !dprobs.defined()) return;
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype());
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
