#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/hash_router.h"

namespace remoe::ops {
using namespace detail;

Routing hash_router(const Tensor& ids, int64_t n_experts, int k, DType dtype) {
  constexpr const char* op = "hash_router";
  check_ndim(op, {"ids", ids}, 1);
  check_dtype(op, {"ids", ids}, DType::i32);
  check_cpu(op, {{"ids", ids}});
  REMOE_CHECK(n_experts >= 1 && k >= 1 && k <= n_experts, op, ": k = ", k,
              " must be in [1, E] with E = ", n_experts);
  const int64_t n_tokens = ids.dim(0);
  Routing r;
  r.gates = Tensor::empty({n_tokens, n_experts}, dtype);
  r.mask = Tensor::empty({n_tokens, n_experts}, DType::i32);
  r.expert_counts = Tensor::empty({n_experts}, DType::i32);
  r.score_sums = Tensor::empty({n_experts}, dtype);
  r.token_counts = Tensor::empty({n_tokens}, DType::i32);
  r.nonzero = Tensor::empty({}, DType::i32);
  dispatch_float(op, dtype, [&](auto tag) {
    using T = decltype(tag);
    const cpu::RouterStats<T> stats{r.mask.data<int32_t>(), r.expert_counts.data<int32_t>(),
                                    r.score_sums.data<T>(), r.token_counts.data<int32_t>(),
                                    r.nonzero.data<int32_t>()};
    cpu::hash_router_forward(r.gates.data<T>(), stats, ids.data<int32_t>(), n_tokens, n_experts, k);
  });
  return r;
}

}  // namespace remoe::ops
