// Weighted combine, the inverse of the permutation: y[t] = Σ_e gates[t, e] · expert_out[row_of[t, e]]
// over the active pairs (row_of ≥ 0), e ascending. Token-major, no atomics, deterministic.
// A token with no active expert gets y[t] = 0.
//   expert_out: (N, d); gates: (T, E); row_of: (T, E) from permute_indices; y: (T, d).
// Backward:
//   dexpert_out[row_of[t, e]] = gates[t, e] · dy[t]
//   dgates[t, e] = <dy[t], expert_out[row_of[t, e]]> when active, 0 otherwise.
// Either output may be null. dexpert_out (n_rows, d) is zeroed first, so a row no pair maps to
// reads 0 (permute_indices maps every row).
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void combine_forward(T* y, const T* expert_out, const T* gates, const int32_t* row_of,
                     int64_t n_tokens, int64_t n_experts, int64_t dim);

template <typename T>
void combine_backward(T* dexpert_out, T* dgates, const T* dy, const T* expert_out, const T* gates,
                      const int32_t* row_of, int64_t n_tokens, int64_t n_experts, int64_t dim,
                      int64_t n_rows);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/combine.cu): the same contracts on device pointers, with the
// gates in f32 whatever the storage type T of the rows (f32 or bf16): the router runs in fp32.
// One block per token; sums in fp32, e ascending for y; dgates is a block reduction in a fixed
// tree, so runs repeat bit for bit.
namespace remoe::cuda {

template <typename T>
void combine_forward(T* y, const T* expert_out, const float* gates, const int32_t* row_of,
                     int64_t n_tokens, int64_t n_experts, int64_t dim, cudaStream_t stream);

template <typename T>
void combine_backward(T* dexpert_out, float* dgates, const T* dy, const T* expert_out,
                      const float* gates, const int32_t* row_of, int64_t n_tokens,
                      int64_t n_experts, int64_t dim, int64_t n_rows, cudaStream_t stream);

}  // namespace remoe::cuda
