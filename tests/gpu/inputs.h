// Inputs for the gpu suite's transformer-kernel tests: one set of values for the CUDA kernel and
// the CPU reference. A bf16 input is rounded first, and the reference gets the rounded values
// back in f32, so the comparison measures the kernel, not the rounding of its inputs.
#pragma once

#include <type_traits>

#include "tests/gpu/gpu_test.h"

namespace remoe::test {

struct GpuInput {
  Tensor ref;  // f32, on the CPU: what the reference reads
  Tensor gpu;  // T, on the GPU: what the kernel reads
};

template <typename T>
GpuInput gpu_input(const Tensor& x32) {
  if constexpr (std::is_same_v<T, float>) {
    return {x32, on_gpu(x32)};
  } else {
    const Tensor xb = ops::cast(x32, DType::bf16);
    return {ops::cast(xb, DType::f32), on_gpu(xb)};
  }
}

template <typename T>
Tensor gpu_empty(const Shape& shape) {
  return Tensor::empty(shape, dtype_of<T>(), Device::cuda);
}

inline Tensor cpu_empty(const Shape& shape) { return Tensor::empty(shape, DType::f32); }

inline cudaStream_t gpu_stream() { return static_cast<cudaStream_t>(device::cuda_stream()); }

// atol for a kernel output stored as T whose values are of order `magnitude`: bf16 keeps
// 8 bits, so near-zero outputs get an absolute floor of 1e-3 of the magnitude.
template <typename T>
constexpr double out_atol(double magnitude = 1.0) {
  return (std::is_same_v<T, float> ? kGpuF32Atol : 1e-3) * magnitude;
}

// rtol for a kernel output stored as T: f32 outputs are held tight, bf16 ones to their rounding.
template <typename T>
constexpr double out_rtol() {
  return std::is_same_v<T, float> ? kGpuF32Rtol : kGpuBf16Rtol;
}

}  // namespace remoe::test
