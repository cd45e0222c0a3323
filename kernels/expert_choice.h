// Expert-choice routing (Zhou et al. 2022): p = softmax(z) per token over the E experts, then
// each expert takes the `capacity` tokens with the largest p[t, e] (ties: the lower token
// index); gate = p on the taken pairs, 0 elsewhere. Every expert processes exactly
// min(capacity, T) tokens; a token may be taken by 0..E experts.
//
// NOTE: not causal. Whether expert e takes token t depends on the other tokens of the
// micro-batch, later positions included, so a causal LM trained with it sees the future
// through the routing, and generating one token at a time routes differently from training.
//
// logits, gates, probs: (T, E); stats as in router.h (score_sums = Σ_t p[t, e]).
// Backward: the same as top-k's without renormalisation (router.h): dp = dprobs + mask ⊙
// dgates, dz = p ⊙ (dp − Σ_j p_j dp_j); expert_choice_router_backward calls it.
#pragma once

#include <cstdint>

#include "kernels/router.h"

namespace remoe::cpu {

template <typename T>
void expert_choice_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                                  int64_t n_tokens, int64_t n_experts, int64_t capacity);

template <typename T>
void expert_choice_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                                   const int32_t* mask, int64_t n_tokens, int64_t n_experts);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/expert_choice.cu), f32 and f64: the same contracts on device
// pointers (stats included). The choice is exact for the probabilities the GPU computed (ties:
// the lower token index); the softmax and score_sums agree with the CPU to rounding, so a
// near-tie between two tokens' probabilities may resolve differently from the CPU's.
// The backward is cuda::topk_router_backward's, so it takes E ≤ kTopkMaxExperts (router.h).
namespace remoe::cuda {

template <typename T>
void expert_choice_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                                  int64_t n_tokens, int64_t n_experts, int64_t capacity,
                                  cudaStream_t stream);

template <typename T>
void expert_choice_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                                   const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                                   cudaStream_t stream);

}  // namespace remoe::cuda
