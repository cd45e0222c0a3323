// SwiGLU's gate: h = silu(a) ⊙ b, silu(a) = a · sigmoid(a), over n values.
// In an FFN, a = x W1ᵀ and b = x W3ᵀ; then y = h W2ᵀ.
// Backward writes da, db (either may be null).
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T> void swiglu_forward(T* h, const T* a, const T* b, int64_t n);

template <typename T>
void swiglu_backward(T* da, T* db, const T* dh, const T* a, const T* b, int64_t n);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/swiglu.cu), T = float or bf16, math in f32.
namespace remoe::cuda {

template <typename T>
void swiglu_forward(T* h, const T* a, const T* b, int64_t n, cudaStream_t stream);

template <typename T>
void swiglu_backward(T* da, T* db, const T* dh, const T* a, const T* b, int64_t n,
                     cudaStream_t stream);

}  // namespace remoe::cuda
