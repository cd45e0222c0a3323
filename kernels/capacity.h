// Capacity with token dropping (GShard / Switch; Megatron's --moe-expert-capacity-factor):
// an expert keeps at most `capacity` of the (token, expert) pairs routed to it; the others are
// dropped — gate 0, no row in the permutation. Which pairs an over-full expert keeps:
//   by probability (by_position = false): the `capacity` largest scores[t, e] (ties: the lower
//     token index), Megatron's --moe-token-drop-policy probs;
//   by position (by_position = true): the first `capacity` tokens in token order, "position".
// An expert with at most `capacity` pairs keeps them all.
//
// gates, scores: (T, E); mask: (T, E) i32, 1 on routed pairs.
// Forward writes kept (T, E) i32, gates_out = gates ⊙ kept (T, E), expert_counts (E) and
// token_counts (T) of kept, and nonzero (1) = Σ kept.
// Backward: dgates = dgates_out ⊙ kept (T·E elements).
#pragma once

#include <cstdint>

#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void capacity_drop_forward(T* gates_out, int32_t* kept, int32_t* expert_counts,
                           int32_t* token_counts, int32_t* nonzero, const T* gates,
                           const int32_t* mask, const T* scores, int64_t n_tokens,
                           int64_t n_experts, int64_t capacity, bool by_position);

template <typename T>
void capacity_drop_backward(T* dgates, const T* dgates_out, const int32_t* kept, int64_t n);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/capacity.cu), f32 and f64: the same contracts on device pointers,
// the same choice bit for bit (ties: the lower token index; −0 and +0 are equal scores, as the
// CPU's comparison sees them; NaN scores are unordered on both sides and not supported).
// expert_counts, token_counts and nonzero are always written, also for T = 0.
namespace remoe::cuda {

template <typename T>
void capacity_drop_forward(T* gates_out, int32_t* kept, int32_t* expert_counts,
                           int32_t* token_counts, int32_t* nonzero, const T* gates,
                           const int32_t* mask, const T* scores, int64_t n_tokens,
                           int64_t n_experts, int64_t capacity, bool by_position,
                           cudaStream_t stream);

template <typename T>
void capacity_drop_backward(T* dgates, const T* dgates_out, const int32_t* kept, int64_t n,
                            cudaStream_t stream);

}  // namespace remoe::cuda
