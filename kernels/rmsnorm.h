// RMSNorm (pre-norm, LLaMA): y[r] = x[r] · rstd[r] ⊙ w, rstd[r] = 1 / sqrt(mean_j x[r,j]² + eps).
//   x, y: (rows, d); w: (d); rstd: (rows), saved for backward (may be null in forward).
// Backward writes dx (rows, d) and dw (d) (either may be null); dw sums rows in order.
#pragma once

#include <cstdint>

namespace remoe::cpu {

template <typename T>
void rmsnorm_forward(T* y, T* rstd, const T* x, const T* w, int64_t rows, int64_t dim, double eps);

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dy, const T* x, const T* w, const T* rstd,
                      int64_t rows, int64_t dim);

}  // namespace remoe::cpu
