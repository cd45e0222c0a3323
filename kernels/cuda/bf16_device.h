// Device-side views of remoe's storage types: remoe::bf16 and CUDA's __nv_bfloat16 share their
// bits, so kernels take CUDA's type; load/store convert to and from the fp32 (or f64) that the
// arithmetic runs in.
#pragma once

#include <cuda_bf16.h>

#include <type_traits>

#include "kernels/bf16.h"

namespace remoe::cuda {

template <typename T> struct DeviceType { using type = T; };
template <> struct DeviceType<bf16> { using type = __nv_bfloat16; };
template <typename T> using device_t = typename DeviceType<T>::type;

template <typename T>
auto* dev_ptr(T* p) {
  return reinterpret_cast<device_t<T>*>(p);
}
template <typename T>
auto* dev_ptr(const T* p) {
  return reinterpret_cast<const device_t<T>*>(p);
}

// The arithmetic type of a storage type: fp32 for bf16 and f32, f64 for f64.
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

}  // namespace remoe::cuda
