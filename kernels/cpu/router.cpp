// CPU reference routers. Rows (tokens) are independent, so OpenMP splits the per-token work;
// the per-expert statistics are then summed over tokens by one thread in token order, so they
// do not depend on the thread count.
#include "kernels/router.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

namespace remoe::cpu {
namespace {

// expert_counts, score_sums and nonzero from mask and the per-pair scores; token_counts is
// written by the caller's row loop.
template <typename T>
void column_stats(RouterStats<T> stats, const T* scores, int64_t n_tokens, int64_t n_experts) {
  std::vector<int64_t> counts(static_cast<size_t>(n_experts), 0);
  std::vector<double> sums(static_cast<size_t>(n_experts), 0.0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const int32_t* m = stats.mask + t * n_experts;
    const T* s = scores + t * n_experts;
    for (int64_t e = 0; e < n_experts; ++e) {
      counts[size_t(e)] += m[e];
      sums[size_t(e)] += double(s[e]);
    }
  }
  int64_t nonzero = 0;
  for (int64_t e = 0; e < n_experts; ++e) {
    stats.expert_counts[e] = int32_t(counts[size_t(e)]);
    stats.score_sums[e] = T(sums[size_t(e)]);
    nonzero += counts[size_t(e)];
  }
  *stats.nonzero = int32_t(nonzero);
}

}  // namespace

template <typename T>
void relu_router_forward(T* gates, RouterStats<T> stats, const T* logits, int64_t n_tokens,
                         int64_t n_experts) {
#pragma omp parallel for schedule(static) if (n_tokens * n_experts > 65536)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const T* z = logits + t * n_experts;
    T* g = gates + t * n_experts;
    int32_t* m = stats.mask + t * n_experts;
    int32_t active = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      const bool on = z[e] > T(0);  // NOTE: also false for NaN, which then gates nothing
      g[e] = on ? z[e] : T(0);
      m[e] = on ? 1 : 0;
      active += m[e];
    }
    stats.token_counts[t] = active;
  }
  column_stats(stats, gates, n_tokens, n_experts);
}

template <typename T>
void relu_router_backward(T* dlogits, const T* dgates, const T* logits, int64_t n_tokens,
                          int64_t n_experts) {
  const int64_t n = n_tokens * n_experts;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dlogits[i] = logits[i] > T(0) ? dgates[i] : T(0);
}

template <typename T>
void topk_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                         int64_t n_tokens, int64_t n_experts, int k, bool renormalize) {
  topk_router_forward(gates, probs, stats, logits, static_cast<const T*>(nullptr), n_tokens,
                      n_experts, k, renormalize);
}

template <typename T>
void topk_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                         const T* bias, int64_t n_tokens, int64_t n_experts, int k,
                         bool renormalize) {
#pragma omp parallel if (n_tokens * n_experts > 65536)
  {
    std::vector<int64_t> order(static_cast<size_t>(n_experts));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      const T* z = logits + t * n_experts;
      T* p = probs + t * n_experts;
      T* g = gates + t * n_experts;
      int32_t* m = stats.mask + t * n_experts;

      T z_max = z[0];
      for (int64_t e = 1; e < n_experts; ++e) z_max = std::max(z_max, z[e]);
      T sum = 0;
      for (int64_t e = 0; e < n_experts; ++e) {
        p[e] = std::exp(z[e] - z_max);
        sum += p[e];
      }
      for (int64_t e = 0; e < n_experts; ++e) p[e] /= sum;

      // The k largest (biased) probabilities; equal ones are taken in expert order.
      std::iota(order.begin(), order.end(), int64_t(0));
      const auto score = [p, bias](int64_t e) { return bias ? p[e] + bias[e] : p[e]; };
      const auto before = [&score](int64_t a, int64_t b) {
        const T sa = score(a), sb = score(b);
        return sa > sb || (sa == sb && a < b);
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      T selected_sum = 0;
      for (int64_t e = 0; e < n_experts; ++e) {
        g[e] = 0;
        m[e] = 0;
      }
      for (int i = 0; i < k; ++i) {
        const int64_t e = order[size_t(i)];
        m[e] = 1;
        g[e] = p[e];
        selected_sum += p[e];
      }
      if (renormalize)
        for (int i = 0; i < k; ++i) g[order[size_t(i)]] /= selected_sum;
      stats.token_counts[t] = k;
    }
  }
  column_stats(stats, probs, n_tokens, n_experts);
}

template <typename T>
void topk_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                          const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                          bool renormalize) {
#pragma omp parallel if (n_tokens * n_experts > 65536)
  {
    std::vector<double> dp(static_cast<size_t>(n_experts));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      const T* p = probs + t * n_experts;
      const int32_t* m = mask + t * n_experts;
      for (int64_t e = 0; e < n_experts; ++e)
        dp[size_t(e)] = dprobs ? double(dprobs[t * n_experts + e]) : 0.0;

      if (dgates) {
        const T* dg = dgates + t * n_experts;
        if (!renormalize) {
          for (int64_t e = 0; e < n_experts; ++e)
            if (m[e]) dp[size_t(e)] += double(dg[e]);
        } else {
          // g_j = p_j / S over the selected, S = Σ_sel p: dp_i = (dg_i − Σ_sel dg_j g_j) / S.
          double s = 0;
          for (int64_t e = 0; e < n_experts; ++e)
            if (m[e]) s += double(p[e]);
          double dg_dot_g = 0;
          for (int64_t e = 0; e < n_experts; ++e)
            if (m[e]) dg_dot_g += double(dg[e]) * double(p[e]) / s;
          for (int64_t e = 0; e < n_experts; ++e)
            if (m[e]) dp[size_t(e)] += (double(dg[e]) - dg_dot_g) / s;
        }
      }

      double p_dot_dp = 0;
      for (int64_t e = 0; e < n_experts; ++e) p_dot_dp += double(p[e]) * dp[size_t(e)];
      T* dz = dlogits + t * n_experts;
      for (int64_t e = 0; e < n_experts; ++e) dz[e] = T(double(p[e]) * (dp[size_t(e)] - p_dot_dp));
    }
  }
}

template void relu_router_forward<float>(float*, RouterStats<float>, const float*, int64_t, int64_t);
template void relu_router_forward<double>(double*, RouterStats<double>, const double*, int64_t, int64_t);
template void relu_router_backward<float>(float*, const float*, const float*, int64_t, int64_t);
template void relu_router_backward<double>(double*, const double*, const double*, int64_t, int64_t);
template void topk_router_forward<float>(float*, float*, RouterStats<float>, const float*, int64_t, int64_t, int, bool);
template void topk_router_forward<double>(double*, double*, RouterStats<double>, const double*, int64_t, int64_t, int, bool);
template void topk_router_forward<float>(float*, float*, RouterStats<float>, const float*, const float*, int64_t, int64_t, int, bool);
template void topk_router_forward<double>(double*, double*, RouterStats<double>, const double*, const double*, int64_t, int64_t, int, bool);
template void topk_router_backward<float>(float*, const float*, const float*, const float*, const int32_t*, int64_t, int64_t, bool);
template void topk_router_backward<double>(double*, const double*, const double*, const double*, const int32_t*, int64_t, int64_t, bool);

}  // namespace remoe::cpu
