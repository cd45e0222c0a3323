// Token-major: every output row of the forward, and every row of both gradients, is written by
// exactly one token's iteration, so tokens parallelise without atomics and the sum over
// experts keeps its e-ascending order.
#include "kernels/combine.h"

#include <algorithm>
#include <cstddef>
#include <vector>

namespace remoe::cpu {

template <typename T>
void combine_forward(T* y, const T* expert_out, const T* gates, const int32_t* row_of,
                     int64_t n_tokens, int64_t n_experts, int64_t dim) {
#pragma omp parallel
  {
    std::vector<double> acc(static_cast<size_t>(dim));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t e = 0; e < n_experts; ++e) {
        const int32_t row = row_of[t * n_experts + e];
        if (row < 0) continue;
        const double g = gates[t * n_experts + e];
        const T* src = expert_out + int64_t(row) * dim;
        for (int64_t j = 0; j < dim; ++j) acc[size_t(j)] += g * double(src[j]);
      }
      T* y_row = y + t * dim;
      for (int64_t j = 0; j < dim; ++j) y_row[j] = T(acc[size_t(j)]);
    }
  }
}

template <typename T>
void combine_backward(T* dexpert_out, T* dgates, const T* dy, const T* expert_out, const T* gates,
                      const int32_t* row_of, int64_t n_tokens, int64_t n_experts, int64_t dim,
                      int64_t n_rows) {
  // A row_of from permute_indices covers every row; zeroing first keeps "writes" true anyway.
  if (dexpert_out) std::fill(dexpert_out, dexpert_out + n_rows * dim, T(0));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const T* dy_row = dy + t * dim;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t pair = t * n_experts + e;
      const int32_t row = row_of[pair];
      if (row < 0) {
        if (dgates) dgates[pair] = 0;
        continue;
      }
      if (dexpert_out) {
        const T g = gates[pair];
        T* dst = dexpert_out + int64_t(row) * dim;
        for (int64_t j = 0; j < dim; ++j) dst[j] = g * dy_row[j];
      }
      if (dgates) {
        const T* src = expert_out + int64_t(row) * dim;
        double acc = 0;
        for (int64_t j = 0; j < dim; ++j) acc += double(dy_row[j]) * double(src[j]);
        dgates[pair] = T(acc);
      }
    }
  }
}

template void combine_forward<float>(float*, const float*, const float*, const int32_t*, int64_t, int64_t, int64_t);
template void combine_forward<double>(double*, const double*, const double*, const int32_t*, int64_t, int64_t, int64_t);
template void combine_backward<float>(float*, float*, const float*, const float*, const float*, const int32_t*, int64_t, int64_t, int64_t, int64_t);
template void combine_backward<double>(double*, double*, const double*, const double*, const double*, const int32_t*, int64_t, int64_t, int64_t, int64_t);

}  // namespace remoe::cpu
