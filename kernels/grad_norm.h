// Global gradient norm and clipping (torch.nn.utils.clip_grad_norm_ semantics):
//   norm = sqrt(Σ over tensors Σ g²); coef = max_norm / (norm + 1e-6); if coef < 1, g ← coef · g.
// sum_squares accumulates in double in index order (deterministic); the op layer adds the
// tensors' sums in parameter order. scale_inplace multiplies n values by s.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T> double sum_squares(const T* x, int64_t n);
template <typename T> void scale_inplace(T* x, double s, int64_t n);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/grad_norm.cu), T = float or bf16. The sum of squares runs in
// double over a grid whose size depends on n only, then one block adds the per-block sums in
// order: deterministic on any GPU. Results stay on the device (no readback in a step).
namespace remoe::cuda {

// out: one double on the device; out[0] = Σ x² (accumulate: out[0] += Σ x², so the op layer
// sums tensors in parameter order with one launch pair each).
template <typename T>
void sum_squares(double* out, const T* x, int64_t n, bool accumulate, cudaStream_t stream);

// x ← s · x, in double as on the CPU.
template <typename T> void scale_inplace(T* x, double s, int64_t n, cudaStream_t stream);

// Clipping without a readback: coef = max_norm / (sqrt(sum_sq[0]) + 1e-6), read on the device;
// x ← coef · x when coef < 1, untouched otherwise.
template <typename T>
void clip_inplace(T* x, const double* sum_sq, double max_norm, int64_t n, cudaStream_t stream);

}  // namespace remoe::cuda
