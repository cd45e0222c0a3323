// matmul: C = op(A) · op(B), the dense GEMM behind every linear layer.
//   op(A): (M, K) — A is stored (M, K), or (K, M) when trans_a
//   op(B): (K, N) — B is stored (K, N), or (N, K) when trans_b   (x · Wᵀ: trans_b = true)
//   C:     (M, N), row-major, overwritten.
// Backward, for dC (M, N), writes dA and dB in their stored layouts (either may be null).
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                    bool trans_b);

template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, int64_t M, int64_t N,
                     int64_t K, bool trans_a, bool trans_b);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/matmul.cu). Same layouts and transposes as the CPU.
//   f32 operands: a tiled CUDA-core kernel, each output summed over k in order (a tight twin of
//   the CPU reference for tests);
//   bf16 operands: tensor cores (WMMA 16×16×16) with f32 accumulation; C in bf16 or f32 —
//   except x·wᵀ with C in bf16 on a Hopper GPU (trans_a = false, trans_b = true; K and N
//   multiples of 8, 16-byte aligned buffers): forward and backward run on the grouped GEMM's
//   sm_90a kernels as one group (kernels/grouped_matmul.h; REMOE_GROUPED_GEMM=tiled opts out).
// Tails (M, N, K not multiples of the tile) are zero-filled in shared memory; K = 0 gives C = 0.
namespace remoe::cuda {

void matmul_forward(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K,
                    bool trans_a, bool trans_b, cudaStream_t stream);
void matmul_forward(bf16* c, const bf16* a, const bf16* b, int64_t M, int64_t N, int64_t K,
                    bool trans_a, bool trans_b, cudaStream_t stream);
void matmul_forward(float* c, const bf16* a, const bf16* b, int64_t M, int64_t N, int64_t K,
                    bool trans_a, bool trans_b, cudaStream_t stream);

// dA, dB in their stored layouts (either may be null), as matmul_forward calls.
void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b,
                     int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
                     cudaStream_t stream);
void matmul_backward(bf16* da, bf16* db, const bf16* dc, const bf16* a, const bf16* b, int64_t M,
                     int64_t N, int64_t K, bool trans_a, bool trans_b, cudaStream_t stream);
void matmul_backward(float* da, float* db, const bf16* dc, const bf16* a, const bf16* b,
                     int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
                     cudaStream_t stream);

}  // namespace remoe::cuda
