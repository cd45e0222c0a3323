// Routers: from router logits z = x Wrᵀ (T, E) to gates, in one pass that also writes the
// routing statistics (REMOE_SPEC §1 and §3). Logits, gates and probabilities are f32 on the GPU.
//
// ReLU routing (ReMoE):   R = max(z, 0), mask = 1[R > 0] (strict: z = 0 is inactive).
//   backward: dz = dR ⊙ 1[z > 0].
// Softmax top-k (dMoE):   p = softmax(z) per token over all E; the k largest p are selected
//   (ties: the lower expert index wins); gate = p on the selected, 0 elsewhere, or, with
//   renormalize (Mixtral), p / Σ_selected p.
//   backward: dp = dprobs + d(gates)/dp · dgates, then dz = p ⊙ (dp − Σ_j p_j dp_j).
#pragma once

#include <cstdint>

#include "kernels/stream.h"

namespace remoe::cpu {

// What every router writes besides its gates; all pointers required.
template <typename T>
struct RouterStats {
  int32_t* mask;           // (T, E)  1 where the (token, expert) pair is active
  int32_t* expert_counts;  // (E)     c_e = Σ_t mask[t, e]
  T* score_sums;           // (E)     Σ_t s[t, e] of the score the balance loss uses: R or p
  int32_t* token_counts;   // (T)     active experts per token
  int32_t* nonzero;        // (1)     Σ mask
};

template <typename T>
void relu_router_forward(T* gates, RouterStats<T> stats, const T* logits, int64_t n_tokens,
                         int64_t n_experts);

template <typename T>
void relu_router_backward(T* dlogits, const T* dgates, const T* logits, int64_t n_tokens,
                          int64_t n_experts);

// probs: (T, E) the full softmax, written for the aux loss. k in [1, E].
template <typename T>
void topk_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                         int64_t n_tokens, int64_t n_experts, int k, bool renormalize);

// The same with a selection bias (E) (aux-loss-free balancing, DeepSeek-V3): the k largest
// p[t, e] + bias[e] are selected (ties: the lower expert index), but the gates are still the
// unbiased p (renormalised over the selected when asked). bias may be null (no bias).
// The backward is topk_router_backward's: the bias only moves the mask.
template <typename T>
void topk_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                         const T* bias, int64_t n_tokens, int64_t n_experts, int k,
                         bool renormalize);

// dgates and dprobs (T, E), either may be null (no gradient through that output).
template <typename T>
void topk_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                          const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                          bool renormalize);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/router.cu), f32 and f64: the same contracts on device pointers
// (stats included). Statistics are reduced in a fixed order (per-block partials, then one
// block over the partials), so they do not change from run to run; the per-expert score sums
// and the softmax are summed in another order than the CPU's, so they agree to rounding.
// topk_*: n_experts ≤ kTopkMaxExperts (one warp holds a token's row in registers), k ≤ E.
// topk_router_forward takes the selection bias (E) last, before the stream (null: no bias),
// with the CPU overload's meaning: p[t, e] + bias[e] (summed in T) picks the k experts, the
// gates and every statistic are the unbiased p's.
namespace remoe::cuda {

template <typename T>
using RouterStats = cpu::RouterStats<T>;

inline constexpr int64_t kTopkMaxExperts = 256;

template <typename T>
void relu_router_forward(T* gates, RouterStats<T> stats, const T* logits, int64_t n_tokens,
                         int64_t n_experts, cudaStream_t stream);

template <typename T>
void relu_router_backward(T* dlogits, const T* dgates, const T* logits, int64_t n_tokens,
                          int64_t n_experts, cudaStream_t stream);

template <typename T>
void topk_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                         int64_t n_tokens, int64_t n_experts, int k, bool renormalize,
                         const T* bias, cudaStream_t stream);

template <typename T>
void topk_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                          const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                          bool renormalize, cudaStream_t stream);

}  // namespace remoe::cuda
