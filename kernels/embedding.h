// embedding: out[t] = table[ids[t]].
//   ids: (T) i32 in [0, V) (the op layer validates the range), table: (V, d), out: (T, d).
// Backward writes dtable (V, d) = Σ_{t: ids[t] = v} dout[t], summed in token order
// (deterministic; rows no token used are zero).
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n_tokens, int64_t vocab,
                       int64_t dim);

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t n_tokens,
                        int64_t vocab, int64_t dim);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/embedding.cu), T = float or bf16. The backward sorts the token
// indices by id (a stable radix sort), then one block per distinct id sums its rows in token
// order in f32: no atomics, the same order as the CPU (bit-identical in f32).
namespace remoe::cuda {

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n_tokens,
                       int64_t vocab, int64_t dim, cudaStream_t stream);

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t n_tokens,
                        int64_t vocab, int64_t dim, cudaStream_t stream);

}  // namespace remoe::cuda
