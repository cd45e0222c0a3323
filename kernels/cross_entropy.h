// Fused softmax cross-entropy with mean reduction:
//   loss = (1/n_valid) Σ_{t valid} (lse[t] − logits[t, targets[t]]),  lse[t] = log Σ_v exp(logits[t,v])
//   logits: (T, V); targets: (T) i32, in [0, V) or −1 for "ignore this position";
//   loss: (1); lse: (T), saved for backward. n_valid = 0 gives loss 0.
// Backward: dlogits[t] = dloss · (softmax(logits[t]) − onehot(targets[t])) / n_valid, zero rows
// for ignored positions. dloss is read from memory (a device pointer on the GPU).
// Sums run in a fixed order in double: the result is deterministic.
#pragma once

#include <cstdint>

#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void cross_entropy_forward(T* loss, T* lse, const T* logits, const int32_t* targets,
                           int64_t n_tokens, int64_t vocab);

template <typename T>
void cross_entropy_backward(T* dlogits, const T* dloss, const T* logits, const T* lse,
                            const int32_t* targets, int64_t n_tokens, int64_t vocab);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/cross_entropy.cu), f32 (logits and losses stay f32). One block
// per row with an online softmax over V; the mean is one block summing the rows' losses in
// double in a fixed order. loss and dloss are device pointers: nothing is read back.
namespace remoe::cuda {

void cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets,
                           int64_t n_tokens, int64_t vocab, cudaStream_t stream);

void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits,
                            const float* lse, const int32_t* targets, int64_t n_tokens,
                            int64_t vocab, cudaStream_t stream);

}  // namespace remoe::cuda
