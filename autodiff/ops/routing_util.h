// What the router ops share (router.cpp, expert_choice.cpp, hash_router.cpp, z_loss.cpp): the
// checks of router logits and the allocation of a Routing's outputs.
#pragma once

#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/router.h"

namespace remoe::ops::detail {

// logits (T, E): 2-D, f32 or f64 (f32 on the GPU), E ≥ 1; errors name the op.
inline void check_logits(const char* op, const Tensor& logits) {
  check_ndim(op, {"logits", logits}, 2);
  REMOE_CHECK(logits.dtype() == DType::f32 || (logits.dtype() == DType::f64 && !on_gpu(logits)),
              op, ": logits must be f32 or f64 (f32 on the GPU), got ", describe({"logits", logits}),
              " on ", device_name(logits.device()));
  REMOE_CHECK(logits.dim(1) >= 1, op, ": logits ", shape_str(logits.shape()),
              " has no experts (E = 0)");
}

// Everything but gates' gradient and probs, allocated for T tokens and E experts on `device`.
inline Routing empty_routing(int64_t n_tokens, int64_t n_experts, DType dtype,
                             Device device = Device::cpu) {
  Routing r;
  r.gates = Tensor::empty({n_tokens, n_experts}, dtype, device);
  r.mask = Tensor::empty({n_tokens, n_experts}, DType::i32, device);
  r.expert_counts = Tensor::empty({n_experts}, DType::i32, device);
  r.score_sums = Tensor::empty({n_experts}, dtype, device);
  r.token_counts = Tensor::empty({n_tokens}, DType::i32, device);
  r.nonzero = Tensor::empty({}, DType::i32, device);
  return r;
}

// The kernels' view of a Routing's statistics (device pointers for a GPU routing).
template <typename T>
cpu::RouterStats<T> stats_of(const Routing& r) {
  return {ptr<int32_t>(r.mask), ptr<int32_t>(r.expert_counts), ptr<T>(r.score_sums),
          ptr<int32_t>(r.token_counts), ptr<int32_t>(r.nonzero)};
}

}  // namespace remoe::ops::detail
