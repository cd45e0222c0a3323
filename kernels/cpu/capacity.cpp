// CPU reference capacity dropping: experts are independent (one column each), so OpenMP splits
// the experts; each column's choice depends only on that column.
#include "kernels/capacity.h"

#include <algorithm>
#include <vector>

namespace remoe::cpu {

template <typename T>
void capacity_drop_forward(T* gates_out, int32_t* kept, int32_t* expert_counts,
                           int32_t* token_counts, int32_t* nonzero, const T* gates,
                           const int32_t* mask, const T* scores, int64_t n_tokens,
                           int64_t n_experts, int64_t capacity, bool by_position) {
  const int64_t n = n_tokens * n_experts;
  for (int64_t i = 0; i < n; ++i) kept[i] = mask[i];
#pragma omp parallel if (n > 65536)
  {
    std::vector<int64_t> tokens;
#pragma omp for schedule(static)
    for (int64_t e = 0; e < n_experts; ++e) {
      tokens.clear();
      for (int64_t t = 0; t < n_tokens; ++t)
        if (mask[t * n_experts + e]) tokens.push_back(t);
      if (int64_t(tokens.size()) <= capacity) continue;
      if (!by_position) {
        // Highest score first; equal scores in token order (stable).
        std::stable_sort(tokens.begin(), tokens.end(), [&](int64_t a, int64_t b) {
          return scores[a * n_experts + e] > scores[b * n_experts + e];
        });
      }
      for (size_t i = size_t(capacity); i < tokens.size(); ++i) kept[tokens[i] * n_experts + e] = 0;
    }
  }
  int64_t total = 0;
  for (int64_t e = 0; e < n_experts; ++e) expert_counts[e] = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    int32_t per_token = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t i = t * n_experts + e;
      gates_out[i] = kept[i] ? gates[i] : T(0);
      per_token += kept[i];
      expert_counts[e] += kept[i];
    }
    token_counts[t] = per_token;
    total += per_token;
  }
  *nonzero = int32_t(total);
}

template <typename T>
void capacity_drop_backward(T* dgates, const T* dgates_out, const int32_t* kept, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dgates[i] = kept[i] ? dgates_out[i] : T(0);
}

template void capacity_drop_forward<float>(float*, int32_t*, int32_t*, int32_t*, int32_t*,
                                           const float*, const int32_t*, const float*, int64_t,
                                           int64_t, int64_t, bool);
template void capacity_drop_forward<double>(double*, int32_t*, int32_t*, int32_t*, int32_t*,
                                            const double*, const int32_t*, const double*, int64_t,
                                            int64_t, int64_t, bool);
template void capacity_drop_backward<float>(float*, const float*, const int32_t*, int64_t);
template void capacity_drop_backward<double>(double*, const double*, const int32_t*, int64_t);

}  // namespace remoe::cpu
