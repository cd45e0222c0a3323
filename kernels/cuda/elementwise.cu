// Elementwise kernels: y = a + b (the residual adds), gradient accumulation (y += x) and the
// f32 ↔ bf16 casts.
//   y, a, b, x: (n) contiguous. One thread per element, grid-stride, 256 threads per block.
// NOTE: memory-bound by design; vectorised loads are the CUDA backend issue's business.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/nvtx.h"
#include "kernels/elementwise.h"

namespace remoe::cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return int(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

__device__ float to_f32(float x) { return x; }
__device__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ T from_f32(float x);
template <> __device__ float from_f32<float>(float x) { return x; }
template <> __device__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// y = a + b; y may be a (in place).
template <typename T>
__global__ void add_kernel(T* y, const T* a, const T* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <typename Dst, typename Src>
__global__ void cast_kernel(Dst* y, const Src* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<Dst>(to_f32(x[i]));
}

// remoe::bf16 and __nv_bfloat16 share their bits; kernels see CUDA's type.
template <typename T> struct DeviceType { using type = T; };
template <> struct DeviceType<bf16> { using type = __nv_bfloat16; };
template <typename T> auto* dev(T* p) { return reinterpret_cast<typename DeviceType<std::remove_const_t<T>>::type*>(p); }
template <typename T> auto* dev(const T* p) { return reinterpret_cast<const typename DeviceType<T>::type*>(p); }

}  // namespace

template <typename T>
void add_forward(T* y, const T* a, const T* b, int64_t n, cudaStream_t stream) {
  NvtxRange range("add_forward");
  if (n == 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dev(y), dev(a), dev(b), n);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void add_inplace(T* y, const T* x, int64_t n, cudaStream_t stream) {
  NvtxRange range("add_inplace");
  if (n == 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dev(y), dev(y), dev(x), n);
  CUDA_CHECK(cudaGetLastError());
}

void cast(bf16* y, const float* x, int64_t n, cudaStream_t stream) {
  NvtxRange range("cast_f32_bf16");
  if (n == 0) return;
  cast_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dev(y), x, n);
  CUDA_CHECK(cudaGetLastError());
}

void cast(float* y, const bf16* x, int64_t n, cudaStream_t stream) {
  NvtxRange range("cast_bf16_f32");
  if (n == 0) return;
  cast_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, dev(x), n);
  CUDA_CHECK(cudaGetLastError());
}

template void add_forward<float>(float*, const float*, const float*, int64_t, cudaStream_t);
template void add_forward<bf16>(bf16*, const bf16*, const bf16*, int64_t, cudaStream_t);
template void add_inplace<float>(float*, const float*, int64_t, cudaStream_t);
template void add_inplace<bf16>(bf16*, const bf16*, int64_t, cudaStream_t);

}  // namespace remoe::cuda
