// Token permutation for dropless dispatch: the active (token, expert) pairs in expert-major
// order, tokens in their original order inside each expert (stable, deterministic).
//   mask: (T, E) i32 from a router, 0 or 1 (ops::permute rejects anything else; the kernel
//   counts any nonzero as active).
//   expert_offsets: (E + 1) — rows of expert e are [offsets[e], offsets[e+1]); offsets[E] = N.
//   token_index: (N) — the token of each row.          N = Σ mask, at most T·E.
//   row_of: (T, E) — the row of pair (t, e), or −1 when the pair is inactive.
// Empty experts have offsets[e] == offsets[e+1].
//
// gather_rows: out (N, d) = x[token_index] with x (T, d).
// Its backward is token-major, no atomics: dx[t] = Σ_e dout[row_of[t, e]], e ascending.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

void permute_indices(int32_t* expert_offsets, int32_t* token_index, int32_t* row_of,
                     const int32_t* mask, int64_t n_tokens, int64_t n_experts);

template <typename T>
void gather_rows_forward(T* out, const T* x, const int32_t* token_index, int64_t n_rows,
                         int64_t dim);

template <typename T>
void gather_rows_backward(T* dx, const T* dout, const int32_t* row_of, int64_t n_tokens,
                          int64_t n_experts, int64_t dim);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/permute.cu): the same contracts on device pointers.
// permute_indices is a CUB exclusive scan over the mask read in (expert, token) order — the
// prefix at pair (e, t) is its row, which is the stable expert-major order — so it writes the
// same integers as the CPU. Its temporary storage (2·T·E i32 and CUB's scratch) is taken with
// cudaMallocAsync on `stream` and freed on it before returning. Needs T·E < 2^31.
// gather_rows: f32, f64, bf16; the backward sums in fp32 (f64 for f64), e ascending.
namespace remoe::cuda {

void permute_indices(int32_t* expert_offsets, int32_t* token_index, int32_t* row_of,
                     const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                     cudaStream_t stream);

template <typename T>
void gather_rows_forward(T* out, const T* x, const int32_t* token_index, int64_t n_rows,
                         int64_t dim, cudaStream_t stream);

template <typename T>
void gather_rows_backward(T* dx, const T* dout, const int32_t* row_of, int64_t n_tokens,
                          int64_t n_experts, int64_t dim, cudaStream_t stream);

}  // namespace remoe::cuda
