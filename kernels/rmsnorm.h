// RMSNorm (pre-norm, LLaMA): y[r] = x[r] · rstd[r] ⊙ w, rstd[r] = 1 / sqrt(mean_j x[r,j]² + eps).
//   x, y: (rows, d); w: (d); rstd: (rows), saved for backward (may be null in forward).
// Backward writes dx (rows, d) and dw (d) (either may be null); dw sums rows in order.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void rmsnorm_forward(T* y, T* rstd, const T* x, const T* w, int64_t rows, int64_t dim, double eps);

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dy, const T* x, const T* w, const T* rstd,
                      int64_t rows, int64_t dim);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/rmsnorm.cu). T = float or bf16 for the activations x, y, dy, dx;
// the weight w, its gradient dw and rstd stay f32 (norm weights are f32 master parameters).
// Row sums run in f32 in a fixed tree order; dw sums rows in fixed chunks, then the chunks in
// order, so every result is deterministic.
namespace remoe::cuda {

template <typename T>
void rmsnorm_forward(T* y, float* rstd, const T* x, const float* w, int64_t rows, int64_t dim,
                     double eps, cudaStream_t stream);

template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dy, const T* x, const float* w,
                      const float* rstd, int64_t rows, int64_t dim, cudaStream_t stream);

}  // namespace remoe::cuda
