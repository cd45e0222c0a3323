// matmul: C = op(A) · op(B), the dense GEMM behind every linear layer.
//   op(A): (M, K) — A is stored (M, K), or (K, M) when trans_a
//   op(B): (K, N) — B is stored (K, N), or (N, K) when trans_b   (x · Wᵀ: trans_b = true)
//   C:     (M, N), row-major, overwritten.
// Backward, for dC (M, N), writes dA and dB in their stored layouts (either may be null).
#pragma once

#include <cstdint>

namespace remoe::cpu {

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                    bool trans_b);

template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, int64_t M, int64_t N,
                     int64_t K, bool trans_a, bool trans_b);

}  // namespace remoe::cpu
