// The MoE regularisers (REMOE_SPEC §2-3), per layer, on scores s (T, E):
//
// load_balance_loss:  loss = coeff · E / (k · T²) · Σ_e c_e · Σ_t s[t, e]
//   ReMoE's load-balanced L1 (s = ReLU gates R, coeff = λ) and the TopK aux loss
//   (s = softmax probabilities p, coeff = 0.01) are this one formula.
//   c_e = expert_counts (E) is a constant: ∂loss/∂s[t, e] = coeff · E · c_e / (k · T²).
// l1_loss (the paper's plain L1, "w/o LB"):  loss = coeff / T · Σ_t Σ_e s[t, e];
//   ∂loss/∂s[t, e] = coeff / T.
//
// loss: (1). Backward scales by the upstream dloss, read from memory (a device pointer on
// the GPU), and writes dscores (T, E). Sums run in a fixed order in double. With no tokens
// (T = 0) the loss is 0 rather than 0/0.
#pragma once

#include <cstdint>

#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void load_balance_loss_forward(T* loss, const T* scores, const int32_t* expert_counts,
                               int64_t n_tokens, int64_t n_experts, double coeff, int k);

template <typename T>
void load_balance_loss_backward(T* dscores, const T* dloss, const int32_t* expert_counts,
                                int64_t n_tokens, int64_t n_experts, double coeff, int k);

template <typename T>
void l1_loss_forward(T* loss, const T* scores, int64_t n_tokens, int64_t n_experts, double coeff);

template <typename T>
void l1_loss_backward(T* dscores, const T* dloss, int64_t n_tokens, int64_t n_experts,
                      double coeff);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/moe_loss.cu), f32 and f64: the same contracts; loss and dloss
// are device pointers. The forward sums in double in a fixed order (per-block partials, then
// one block over them), so the loss repeats bit for bit; the backward is the CPU's formula.
namespace remoe::cuda {

template <typename T>
void load_balance_loss_forward(T* loss, const T* scores, const int32_t* expert_counts,
                               int64_t n_tokens, int64_t n_experts, double coeff, int k,
                               cudaStream_t stream);

template <typename T>
void load_balance_loss_backward(T* dscores, const T* dloss, const int32_t* expert_counts,
                                int64_t n_tokens, int64_t n_experts, double coeff, int k,
                                cudaStream_t stream);

template <typename T>
void l1_loss_forward(T* loss, const T* scores, int64_t n_tokens, int64_t n_experts, double coeff,
                     cudaStream_t stream);

template <typename T>
void l1_loss_backward(T* dscores, const T* dloss, int64_t n_tokens, int64_t n_experts,
                      double coeff, cudaStream_t stream);

}  // namespace remoe::cuda
