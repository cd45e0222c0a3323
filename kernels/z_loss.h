// The router z-loss of ST-MoE (Zoph et al. 2022), per layer, on router logits z (T, E):
//
//   loss = coeff / T · Σ_t (lse_t)²,   lse_t = log Σ_e exp(z[t, e])
//   ∂loss/∂z[t, e] = coeff / T · 2 · lse_t · softmax(z_t)_e
//
// It keeps the logits small (exp in low precision stays finite). loss: (1). Backward scales by
// the upstream dloss, read from memory, and writes dlogits (T, E). The sum runs in token order
// in double; with no tokens (T = 0) the loss is 0.
#pragma once

#include <cstdint>

#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void z_loss_forward(T* loss, const T* logits, int64_t n_tokens, int64_t n_experts, double coeff);

template <typename T>
void z_loss_backward(T* dlogits, const T* dloss, const T* logits, int64_t n_tokens,
                     int64_t n_experts, double coeff);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/z_loss.cu), f32 and f64: the same contracts on device pointers
// (loss and dloss live in device memory). Each token's log-sum-exp is in double, as on the CPU;
// the Σ_t runs as per-block partials summed by one block in block order, so the loss repeats
// bit for bit but agrees with the CPU's token-order sum to rounding. E ≥ 1 when T > 0.
namespace remoe::cuda {

template <typename T>
void z_loss_forward(T* loss, const T* logits, int64_t n_tokens, int64_t n_experts, double coeff,
                    cudaStream_t stream);

template <typename T>
void z_loss_backward(T* dlogits, const T* dloss, const T* logits, int64_t n_tokens,
                     int64_t n_experts, double coeff, cudaStream_t stream);

}  // namespace remoe::cuda
