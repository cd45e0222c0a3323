// CPU reference hash router.
#include "kernels/hash_router.h"

namespace remoe::cpu {

template <typename T>
void hash_router_forward(T* gates, RouterStats<T> stats, const int32_t* ids, int64_t n_tokens,
                         int64_t n_experts, int k) {
  const T gate = T(1) / T(k);
  for (int64_t e = 0; e < n_experts; ++e) stats.expert_counts[e] = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    T* g = gates + t * n_experts;
    int32_t* m = stats.mask + t * n_experts;
    for (int64_t e = 0; e < n_experts; ++e) {
      g[e] = T(0);
      m[e] = 0;
    }
    // (the id as unsigned 32 bits: a negative id still hashes to a fixed expert)
    const uint64_t first = hash_token(uint64_t(uint32_t(ids[t]))) % uint64_t(n_experts);
    for (int i = 0; i < k; ++i) {
      const int64_t e = int64_t((first + uint64_t(i)) % uint64_t(n_experts));
      g[e] = gate;
      m[e] = 1;
      ++stats.expert_counts[e];
    }
    stats.token_counts[t] = k;
  }
  for (int64_t e = 0; e < n_experts; ++e) stats.score_sums[e] = gate * T(stats.expert_counts[e]);
  *stats.nonzero = int32_t(n_tokens * k);
}

template void hash_router_forward<float>(float*, RouterStats<float>, const int32_t*, int64_t,
                                         int64_t, int);
template void hash_router_forward<double>(double*, RouterStats<double>, const int32_t*, int64_t,
                                          int64_t, int);

}  // namespace remoe::cpu
