// AdamW with decoupled weight decay, in PyTorch's order (torch.optim.AdamW):
//   p ← p · (1 − lr · wd)
//   m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
//   p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
// t is the 1-based step. param, m, v, grad: (n). Weight decay is chosen per tensor by the
// caller (REMOE_SPEC §5: none on 1-D parameters).
#pragma once

#include <cstdint>

#include "kernels/stream.h"

namespace remoe::cpu {

struct AdamWHyper {
  double lr = 5e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

template <typename T>
void adamw_step(T* param, T* m, T* v, const T* grad, int64_t n, const AdamWHyper& hyper,
                int64_t step);

}  // namespace remoe::cpu

// CUDA launchers (kernels/cuda/adamw.cu): f32 master weights, moments and gradients, each
// element updated in double exactly as the CPU reference does. The list form updates many
// tensors in a few launches (tensor pointers travel in the kernel's arguments, no copy);
// hyper.weight_decay is ignored there in favour of each tensor's own.
namespace remoe::cuda {

struct AdamWTensor {
  float* param;
  float* m;
  float* v;
  const float* grad;
  int64_t n;
  double weight_decay;
};

void adamw_step(float* param, float* m, float* v, const float* grad, int64_t n,
                const cpu::AdamWHyper& hyper, int64_t step, cudaStream_t stream);

// tensors: a host array of `count` entries.
void adamw_step(const AdamWTensor* tensors, int64_t count, const cpu::AdamWHyper& hyper,
                int64_t step, cudaStream_t stream);

}  // namespace remoe::cuda
