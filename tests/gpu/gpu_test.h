// Helpers shared by the gpu suite: a fixture that skips without a visible GPU, remoe's
// stream, and copies between host vectors and device tensors.
//
// Tolerances (tests/test_util.h states the rule): a CUDA kernel in f32 against the CPU
// reference in f32 agrees to atol 1e-5, rtol 1e-4 unless its test says why not (sums in another
// order); a bf16 path agrees to rtol 1e-2 with atol scaled to the values' magnitude, after a
// cast back to f32.
#pragma once

#include "autodiff/device.h"
#include "kernels/stream.h"
#include "tests/test_util.h"

namespace remoe::test {

inline constexpr double kGpuF32Atol = 1e-5, kGpuF32Rtol = 1e-4;
inline constexpr double kGpuBf16Rtol = 1e-2;

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!device::cuda_available()) GTEST_SKIP() << "no CUDA device visible";
  }
  static cudaStream_t stream() { return static_cast<cudaStream_t>(device::cuda_stream()); }
};

// The same for parameterised tests.
template <typename Param>
class GpuTestWithParam : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!device::cuda_available()) GTEST_SKIP() << "no CUDA device visible";
  }
  static cudaStream_t stream() { return static_cast<cudaStream_t>(device::cuda_stream()); }
};

// A device tensor's typed pointer, for kernel launchers.
template <typename T>
T* dev(const Tensor& t) {
  return static_cast<T*>(t.raw());
}

// Copies the tensor to the GPU (any dtype).
inline Tensor on_gpu(const Tensor& t) { return t.to(Device::cuda); }
// Copies the tensor back (the copy synchronises remoe's stream).
inline Tensor on_cpu(const Tensor& t) { return t.to(Device::cpu); }

}  // namespace remoe::test
