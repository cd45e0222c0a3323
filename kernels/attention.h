// Causal grouped-query attention, softmax(q kᵀ / sqrt(Dh)) v with query s seeing keys 0..s.
//   q, out: (B, S, Hq, Dh); k, v: (B, S, Hkv, Dh); Hq a multiple of Hkv, query head h
//   reads kv head h / (Hq / Hkv).
//   lse: (B, Hq, S), the log-sum-exp of each softmax row, saved for backward (flash style:
//   backward recomputes the probabilities from q, k and lse). May be null in forward.
//   The scores are scaled by 1/sqrt(Dh); lse is of the scaled, causally masked row.
// Backward writes dq, dk, dv (same shapes as q, k, v; any of them may be null to skip it);
// dk and dv sum over the query heads of a group in head order. It needs the forward's lse.
// With P = exp(scores − lse): dV = Pᵀ dO, dP = dO Vᵀ, D_i = Σ_j P_ij dP_ij (= rowsum(dO ⊙ O),
// the form a GPU kernel may use instead; the CPU reference does not read out),
// dS = P ⊙ (dP − D), dQ = dS K / sqrt(Dh), dK = dSᵀ Q / sqrt(Dh).
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int64_t batch,
                       int64_t seq, int64_t q_heads, int64_t kv_heads, int64_t head_dim);

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const T* lse, int64_t batch, int64_t seq, int64_t q_heads,
                        int64_t kv_heads, int64_t head_dim);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/attention.cu), f32, head_dim ≤ 128. Flash style: one block per
// (batch, query head, tile of 32 queries) walks the causal key tiles with an online softmax;
// the backward recomputes P from lse, takes D = rowsum(dO ⊙ O) (so `out` is required), and
// runs two kernels without atomics: dK, dV per key tile (query heads of the group in order),
// then dQ per query tile.
namespace remoe::cuda {

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                       int64_t head_dim, cudaStream_t stream);

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                        int64_t head_dim, cudaStream_t stream);

// bf16 (kernels/cuda/attention_bf16.cu): the same contracts on tensor cores (mma.sync m16n8k16,
// f32 accumulation; FlashAttention-2's blocking, 64 rows a block), head_dim 64, 96 or 128
// (attention_bf16_supported), 16-byte aligned buffers. lse stays f32. The softmax runs in
// f32; P and dS are rounded to bf16 for the products that take them, and the outputs once.
bool attention_bf16_supported(int64_t head_dim);

void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                       int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                       int64_t head_dim, cudaStream_t stream);

void attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                        const bf16* k, const bf16* v, const bf16* out, const float* lse,
                        int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                        int64_t head_dim, cudaStream_t stream);

}  // namespace remoe::cuda
