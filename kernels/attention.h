// Causal grouped-query attention, softmax(q kᵀ / sqrt(Dh)) v with query s seeing keys 0..s.
//   q, out: (B, S, Hq, Dh); k, v: (B, S, Hkv, Dh); Hq a multiple of Hkv, query head h
//   reads kv head h / (Hq / Hkv).
//   lse: (B, Hq, S), the log-sum-exp of each softmax row, saved for backward (flash style:
//   backward recomputes the probabilities from q, k and lse). May be null in forward.
// Backward writes dq, dk, dv (same shapes as q, k, v); dk and dv sum over the query heads of
// a group in head order.
#pragma once

#include <cstdint>

namespace remoe::cpu {

template <typename T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, int64_t batch,
                       int64_t seq, int64_t q_heads, int64_t kv_heads, int64_t head_dim);

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* out, const T* lse, int64_t batch, int64_t seq, int64_t q_heads,
                        int64_t kv_heads, int64_t head_dim);

}  // namespace remoe::cpu
