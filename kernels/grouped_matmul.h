// Grouped (per-expert) GEMM over variable-sized row groups, the experts' linear layers:
//   rows r in [offsets[e], offsets[e+1]) compute y[r] = x[r] · W[e]ᵀ.
//   x: (N, K); w: (E, N_out, K); y: (N, N_out); offsets: (E + 1), offsets[0] = 0,
//   offsets[E] = N, non-decreasing; empty groups allowed.
// Backward writes dx (N, K) = dy · W[e] per group (M-grouped, like forward) and
// dw (E, N_out, K) = dy[group]ᵀ · x[group] (K-grouped; zero for empty groups).
// Either output may be null.
#pragma once

#include <cstdint>

namespace remoe::cpu {

template <typename T>
void grouped_matmul_forward(T* y, const T* x, const T* w, const int32_t* offsets,
                            int64_t n_groups, int64_t k_in, int64_t n_out);

template <typename T>
void grouped_matmul_backward(T* dx, T* dw, const T* dy, const T* x, const T* w,
                             const int32_t* offsets, int64_t n_groups, int64_t k_in,
                             int64_t n_out);

}  // namespace remoe::cpu
