// Device-side helpers shared by the CUDA kernels: the host ↔ device bf16 type mapping, f32
// conversions and arithmetic types, grid sizing, fixed-order block reductions and
// stream-ordered scratch. Included only by .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/bf16.h"
#include "kernels/check.h"

namespace remoe::cuda::detail {

// remoe::bf16 and __nv_bfloat16 share their bits; kernels see CUDA's type.
template <typename T> struct DeviceType { using type = T; };
template <> struct DeviceType<bf16> { using type = __nv_bfloat16; };
template <typename T> using device_t = typename DeviceType<std::remove_const_t<T>>::type;

template <typename T> device_t<T>* dev(T* p) { return reinterpret_cast<device_t<T>*>(p); }
template <typename T> const device_t<T>* dev(const T* p) {
  return reinterpret_cast<const device_t<T>*>(p);
}

// The arithmetic type of a storage type: fp32 for bf16 and f32, f64 for f64; load_acc and
// store_as convert to and from it.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };
template <typename T> using acc_t = typename AccType<T>::type;

__device__ __forceinline__ float load_acc(float x) { return x; }
__device__ __forceinline__ double load_acc(double x) { return x; }
__device__ __forceinline__ float load_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T store_as(float x);
template <> __device__ __forceinline__ float store_as<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 store_as<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <typename T> __device__ __forceinline__ T store_as(double x) { return T(x); }

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Blocks for a grid-stride loop over n items; never 0 (callers return early on n == 0).
inline int grid_for(int64_t n, int threads, int64_t max_blocks = 65535) {
  const int64_t b = (n + threads - 1) / threads;
  return int(b < max_blocks ? (b > 0 ? b : 1) : max_blocks);
}

// Sum over a block of kThreads threads, in a fixed tree order (deterministic for a fixed
// block size). Every thread gets the total. `scratch` holds kThreads values; the leading
// __syncthreads makes back-to-back calls on the same scratch safe.
template <int kThreads, typename Acc>
__device__ Acc block_sum(Acc value, Acc* scratch) {
  static_assert((kThreads & (kThreads - 1)) == 0, "block_sum needs a power-of-two block");
  __syncthreads();
  scratch[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
    __syncthreads();
  }
  return scratch[0];
}

// Stream-ordered scratch memory for one launcher call: allocated before the kernels that use
// it and freed after them on the same stream, from the device's pool (no synchronisation).
// The kernels library sits below autodiff and cannot use device::cuda_alloc; both take from
// the device's default pool, so a freed buffer is reused without a cudaMalloc.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes > 0) CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~Scratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);  // NOTE: no CUDA_CHECK: a destructor must not throw
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  // The buffer at byte_offset (a multiple of scratch_align's for sub-buffers).
  template <typename T> T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Sizes of consecutive sub-buffers of one Scratch, rounded up to 256 bytes (CUB's alignment
// and the widest vector load's).
inline size_t scratch_align(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace remoe::cuda::detail
