#include "autodiff/ops/routing_util.h"
#include "kernels/hash_router.h"

namespace remoe::ops {
using namespace detail;

Routing hash_router(const Tensor& ids, int64_t n_experts, int k, DType dtype) {
  constexpr const char* op = "hash_router";
  check_ndim(op, {"ids", ids}, 1);
  check_dtype(op, {"ids", ids}, DType::i32);
  REMOE_CHECK(n_experts >= 1 && k >= 1 && k <= n_experts, op, ": k = ", k,
              " must be in [1, E] with E = ", n_experts);
  const int64_t n_tokens = ids.dim(0);
  Routing r = empty_routing(n_tokens, n_experts, dtype, ids.device());
  if (on_gpu(ids))
    dispatch_cuda_f32(op, dtype, [&](auto) {
      cuda::hash_router_forward(r.gates.cuda_data<float>(), stats_of<float>(r),
                                ids.cuda_data<int32_t>(), n_tokens, n_experts, k, stream());
    });
  else
    dispatch_float(op, dtype, [&](auto tag) {
      using T = decltype(tag);
      cpu::hash_router_forward(r.gates.data<T>(), stats_of<T>(r), ids.data<int32_t>(), n_tokens,
                               n_experts, k);
    });
  return r;
}

}  // namespace remoe::ops
