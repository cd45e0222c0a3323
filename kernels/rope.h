// RoPE, rotate-half convention (LLaMA / Hugging Face / Megatron default): within each head,
// element i pairs with i + Dh/2 and the pair is rotated by angle s · base^(-2i/Dh), where s is
// the position of the token inside its sequence (0-based).
//   x, y: (B, S, H, Dh), Dh even. Angles are computed in double.
// Backward rotates dy by the opposite angle (the map is orthogonal).
#pragma once

#include <cstdint>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void rope_forward(T* y, const T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                  double base);

template <typename T>
void rope_backward(T* dx, const T* dy, int64_t batch, int64_t seq, int64_t heads,
                   int64_t head_dim, double base);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/rope.cu), T = float or bf16. Angles, sines and cosines in
// double as on the CPU (positions reach thousands of radians, where f32 angles lose ~1e-4).
// y may alias x (each thread reads its pair before writing it).
namespace remoe::cuda {

template <typename T>
void rope_forward(T* y, const T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                  double base, cudaStream_t stream);

template <typename T>
void rope_backward(T* dx, const T* dy, int64_t batch, int64_t seq, int64_t heads,
                   int64_t head_dim, double base, cudaStream_t stream);

}  // namespace remoe::cuda
