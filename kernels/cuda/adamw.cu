// AdamW on the GPU over f32 master weights, moments and gradients.
//   param, m, v, grad: (n) f32 per tensor.
// Each element is updated in double in the CPU reference's order (m and v rounded to f32 before
// the update reads them), so the two agree to the last bit or so; the op is memory-bound, the
// doubles cost nothing that shows.
// Many tensors per launch (after apex's multi_tensor_apply): the kernel's arguments carry up to
// kMaxTensors tensor pointers and a table of up to kMaxBlocks (tensor, chunk) pairs; block b
// updates chunk block_chunk[b] of tensor block_tensor[b]. The host fills the table and launches
// whenever either is full, so no tensor list is copied to the device.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/adamw.h"
#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"

namespace remoe::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTensors = 32;
constexpr int kMaxBlocks = 256;
constexpr int64_t kChunk = 16384;  // elements per block

struct MultiTensorArgs {
  float* param[kMaxTensors];
  float* m[kMaxTensors];
  float* v[kMaxTensors];
  const float* grad[kMaxTensors];
  int64_t n[kMaxTensors];
  double decay[kMaxTensors];  // 1 − lr · weight_decay of each tensor
  int16_t block_tensor[kMaxBlocks];
  int32_t block_chunk[kMaxBlocks];
};
static_assert(sizeof(MultiTensorArgs) <= 4096, "kernel arguments are limited to 4 KiB");

struct Coefficients {
  double beta1, beta2, eps, step_size, bias2_sqrt;
};

__global__ void adamw_kernel(const __grid_constant__ MultiTensorArgs args, const Coefficients c) {
  const int t = args.block_tensor[blockIdx.x];
  const int64_t begin = int64_t(args.block_chunk[blockIdx.x]) * kChunk;
  const int64_t end = min(args.n[t], begin + kChunk);
  float* param = args.param[t];
  float* m = args.m[t];
  float* v = args.v[t];
  const float* grad = args.grad[t];
  const double decay = args.decay[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const double g = grad[i];
    const float mi = float(c.beta1 * double(m[i]) + (1.0 - c.beta1) * g);
    const float vi = float(c.beta2 * double(v[i]) + (1.0 - c.beta2) * g * g);
    m[i] = mi;
    v[i] = vi;
    const double denom = sqrt(double(vi)) / c.bias2_sqrt + c.eps;
    param[i] = float(double(param[i]) * decay - c.step_size * double(mi) / denom);
  }
}

void launch(const MultiTensorArgs& args, int n_blocks, const Coefficients& c, cudaStream_t stream) {
  adamw_kernel<<<n_blocks, kThreads, 0, stream>>>(args, c);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void adamw_step(const AdamWTensor* tensors, int64_t count, const cpu::AdamWHyper& h, int64_t step,
                cudaStream_t stream) {
  NvtxRange range("adamw_step");
  REMOE_CHECK(step >= 1, "adamw_step: the step is 1-based, got ", step);
  const Coefficients c{h.beta1, h.beta2, h.eps, h.lr / (1.0 - std::pow(h.beta1, double(step))),
                       std::sqrt(1.0 - std::pow(h.beta2, double(step)))};
  MultiTensorArgs args{};
  int slot = 0, n_blocks = 0;
  for (int64_t t = 0; t < count; ++t) {
    const AdamWTensor& x = tensors[t];
    if (x.n == 0) continue;
    const int64_t chunks = (x.n + kChunk - 1) / kChunk;
    REMOE_CHECK(chunks <= INT32_MAX, "adamw_step: tensor ", t, " of ", x.n, " values is too large");
    args.param[slot] = x.param;
    args.m[slot] = x.m;
    args.v[slot] = x.v;
    args.grad[slot] = x.grad;
    args.n[slot] = x.n;
    args.decay[slot] = 1.0 - h.lr * x.weight_decay;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      args.block_tensor[n_blocks] = int16_t(slot);
      args.block_chunk[n_blocks] = int32_t(chunk);
      ++n_blocks;
      const bool last_chunk = chunk == chunks - 1;
      if (n_blocks == kMaxBlocks || (last_chunk && slot == kMaxTensors - 1)) {
        launch(args, n_blocks, c, stream);
        n_blocks = 0;
        if (!last_chunk) {
          // The rest of this tensor goes on in the next launch, from slot 0.
          args.param[0] = args.param[slot];
          args.m[0] = args.m[slot];
          args.v[0] = args.v[slot];
          args.grad[0] = args.grad[slot];
          args.n[0] = args.n[slot];
          args.decay[0] = args.decay[slot];
          slot = 0;
        } else {
          slot = -1;  // the next tensor starts at slot 0
        }
      }
    }
    ++slot;
  }
  if (n_blocks > 0) launch(args, n_blocks, c, stream);
}

void adamw_step(float* param, float* m, float* v, const float* grad, int64_t n,
                const cpu::AdamWHyper& hyper, int64_t step, cudaStream_t stream) {
  const AdamWTensor one{param, m, v, grad, n, hyper.weight_decay};
  adamw_step(&one, 1, hyper, step, stream);
}

}  // namespace remoe::cuda
