// The reference permutation is a counting sort on the expert id: count, prefix-sum, then a
// fill in (expert, token) order, which is what makes it stable. It is serial: O(T·E) integer
// work, small next to the expert GEMMs, and the CUDA version is the one that needs to be fast.
#include "kernels/permute.h"

#include <cstddef>
#include <vector>

namespace remoe::cpu {

void permute_indices(int32_t* expert_offsets, int32_t* token_index, int32_t* row_of,
                     const int32_t* mask, int64_t n_tokens, int64_t n_experts) {
  for (int64_t e = 0; e <= n_experts; ++e) expert_offsets[e] = 0;
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t e = 0; e < n_experts; ++e)
      if (mask[t * n_experts + e] != 0) ++expert_offsets[e + 1];
  for (int64_t e = 0; e < n_experts; ++e) expert_offsets[e + 1] += expert_offsets[e];

  std::vector<int32_t> next(expert_offsets, expert_offsets + n_experts);
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t pair = t * n_experts + e;
      if (mask[pair] != 0) {
        const int32_t row = next[size_t(e)]++;
        token_index[row] = int32_t(t);
        row_of[pair] = row;
      } else {
        row_of[pair] = -1;
      }
    }
}

template <typename T>
void gather_rows_forward(T* out, const T* x, const int32_t* token_index, int64_t n_rows,
                         int64_t dim) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rows; ++r) {
    const T* src = x + int64_t(token_index[r]) * dim;
    T* dst = out + r * dim;
    for (int64_t j = 0; j < dim; ++j) dst[j] = src[j];
  }
}

template <typename T>
void gather_rows_backward(T* dx, const T* dout, const int32_t* row_of, int64_t n_tokens,
                          int64_t n_experts, int64_t dim) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    T* dst = dx + t * dim;
    for (int64_t j = 0; j < dim; ++j) dst[j] = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int32_t row = row_of[t * n_experts + e];
      if (row < 0) continue;
      const T* src = dout + int64_t(row) * dim;
      for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
    }
  }
}

template void gather_rows_forward<float>(float*, const float*, const int32_t*, int64_t, int64_t);
template void gather_rows_forward<double>(double*, const double*, const int32_t*, int64_t, int64_t);
template void gather_rows_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t, int64_t);
template void gather_rows_backward<double>(double*, const double*, const int32_t*, int64_t, int64_t, int64_t);

}  // namespace remoe::cpu
