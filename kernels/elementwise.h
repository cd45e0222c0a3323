// Elementwise ops over n contiguous values: the residual add, scaling, gradient
// accumulation, fills and dtype casts.
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T> void add_forward(T* y, const T* a, const T* b, int64_t n);  // y = a + b
template <typename T> void add_inplace(T* y, const T* x, int64_t n);              // y += x
template <typename T> void scale_forward(T* y, const T* x, double s, int64_t n);  // y = s·x
template <typename T> void fill(T* y, T value, int64_t n);

// y = x converted; to bf16 rounds to nearest even.
template <typename Dst, typename Src> void cast(Dst* y, const Src* x, int64_t n);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/elementwise.cu): outputs first, then inputs, size, stream.
namespace remoe::cuda {

template <typename T>  // f32, bf16: y = a + b in one pass
void add_forward(T* y, const T* a, const T* b, int64_t n, cudaStream_t stream);
template <typename T> void add_inplace(T* y, const T* x, int64_t n, cudaStream_t stream);  // f32, bf16
void cast(bf16* y, const float* x, int64_t n, cudaStream_t stream);
void cast(float* y, const bf16* x, int64_t n, cudaStream_t stream);

}  // namespace remoe::cuda
