// CPU reference expert-choice router: the softmax per token (rows independent), then the
// choice per expert (columns independent), then the statistics in token order.
#include "kernels/expert_choice.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace remoe::cpu {

template <typename T>
void expert_choice_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                                  int64_t n_tokens, int64_t n_experts, int64_t capacity) {
  const int64_t n = n_tokens * n_experts;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const T* z = logits + t * n_experts;
    T* p = probs + t * n_experts;
    T z_max = z[0];
    for (int64_t e = 1; e < n_experts; ++e) z_max = std::max(z_max, z[e]);
    T sum = 0;
    for (int64_t e = 0; e < n_experts; ++e) sum += p[e] = std::exp(z[e] - z_max);
    for (int64_t e = 0; e < n_experts; ++e) p[e] /= sum;
  }
  for (int64_t i = 0; i < n; ++i) {
    gates[i] = T(0);
    stats.mask[i] = 0;
  }
  const int64_t take = std::min(capacity, n_tokens);
#pragma omp parallel if (n > 65536)
  {
    std::vector<int64_t> order(static_cast<size_t>(n_tokens));
#pragma omp for schedule(static)
    for (int64_t e = 0; e < n_experts; ++e) {
      std::iota(order.begin(), order.end(), int64_t(0));
      const auto before = [&](int64_t a, int64_t b) {
        const T pa = probs[a * n_experts + e], pb = probs[b * n_experts + e];
        return pa > pb || (pa == pb && a < b);
      };
      std::partial_sort(order.begin(), order.begin() + take, order.end(), before);
      for (int64_t i = 0; i < take; ++i) {
        const int64_t at = order[size_t(i)] * n_experts + e;
        stats.mask[at] = 1;
        gates[at] = probs[at];
      }
    }
  }
  std::vector<double> sums(static_cast<size_t>(n_experts), 0.0);
  for (int64_t e = 0; e < n_experts; ++e) stats.expert_counts[e] = 0;
  int64_t nonzero = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    int32_t active = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t i = t * n_experts + e;
      active += stats.mask[i];
      stats.expert_counts[e] += stats.mask[i];
      sums[size_t(e)] += double(probs[i]);
    }
    stats.token_counts[t] = active;
    nonzero += active;
  }
  for (int64_t e = 0; e < n_experts; ++e) stats.score_sums[e] = T(sums[size_t(e)]);
  *stats.nonzero = int32_t(nonzero);
}

template <typename T>
void expert_choice_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                                   const int32_t* mask, int64_t n_tokens, int64_t n_experts) {
  // gate = p on the taken pairs: the rule of raw-probability top-k, whatever chose the pairs.
  topk_router_backward(dlogits, dgates, dprobs, probs, mask, n_tokens, n_experts, false);
}

template void expert_choice_router_forward<float>(float*, float*, RouterStats<float>,
                                                  const float*, int64_t, int64_t, int64_t);
template void expert_choice_router_forward<double>(double*, double*, RouterStats<double>,
                                                   const double*, int64_t, int64_t, int64_t);
template void expert_choice_router_backward<float>(float*, const float*, const float*,
                                                   const float*, const int32_t*, int64_t, int64_t);
template void expert_choice_router_backward<double>(double*, const double*, const double*,
                                                    const double*, const int32_t*, int64_t,
                                                    int64_t);

}  // namespace remoe::cpu
