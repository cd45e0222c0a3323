// SwiGLU's gate on the GPU: h = silu(a) ⊙ b, silu(a) = a · σ(a).
//   a, b, h, dh, da, db: (n) T (f32 or bf16), math in f32, one thread per element (grid-stride).
// The sigmoid is split by sign so expf never overflows (as in the CPU reference).
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/swiglu.h"

namespace remoe::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float a) {
  if (a >= 0.f) return 1.f / (1.f + expf(-a));
  const float e = expf(a);
  return e / (1.f + e);
}

template <typename T>
__global__ void swiglu_forward_kernel(T* h, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float ai = to_f32(a[i]);
    h[i] = from_f32<T>(ai * sigmoid(ai) * to_f32(b[i]));
  }
}

// silu'(a) = σ(a) · (1 + a · (1 − σ(a))).
template <typename T>
__global__ void swiglu_backward_kernel(T* da, T* db, const T* dh, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float ai = to_f32(a[i]), g = to_f32(dh[i]);
    const float sig = sigmoid(ai);
    if (da != nullptr) da[i] = from_f32<T>(g * to_f32(b[i]) * sig * (1.f + ai * (1.f - sig)));
    if (db != nullptr) db[i] = from_f32<T>(g * ai * sig);
  }
}

}  // namespace

template <typename T>
void swiglu_forward(T* h, const T* a, const T* b, int64_t n, cudaStream_t stream) {
  NvtxRange range("swiglu_forward");
  if (n == 0) return;
  swiglu_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dev(h), dev(a), dev(b), n);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void swiglu_backward(T* da, T* db, const T* dh, const T* a, const T* b, int64_t n,
                     cudaStream_t stream) {
  NvtxRange range("swiglu_backward");
  if (n == 0 || (da == nullptr && db == nullptr)) return;
  swiglu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dev(da), dev(db), dev(dh), dev(a),
                                                                          dev(b), n);
  CUDA_CHECK(cudaGetLastError());
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_forward<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t, cudaStream_t);
template void swiglu_backward<bf16>(bf16*, bf16*, const bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);

}  // namespace remoe::cuda
