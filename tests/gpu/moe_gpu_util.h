// Helpers for the MoE kernels' gpu tests (router, permute, grouped_matmul, combine, moe_loss):
// host vectors to device tensors and back, random inputs, bf16 rounding, and a comparison of
// raw vectors under the one tolerance rule of tests/test_util.h.
#pragma once

#include <cmath>
#include <vector>

#include "kernels/bf16.h"
#include "tests/gpu/gpu_test.h"

namespace remoe::test {

// A device tensor holding `v`; an empty v gives an empty tensor of that shape.
template <typename T>
Tensor upload(const Shape& shape, const std::vector<T>& v) {
  return on_gpu(Tensor::from_vector<T>(shape, v));
}

template <typename T>
std::vector<T> download(const Tensor& t) {
  return t.to_vector<T>();
}

inline std::vector<float> normal_f32(int64_t n, Rng& rng, double std = 1.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(std * rng.normal());
  return v;
}

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

template <typename T>
std::vector<double> as_double(const std::vector<T>& v) {
  if constexpr (std::is_same_v<T, bf16>) {
    std::vector<double> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
    return out;
  } else {
    return std::vector<double>(v.begin(), v.end());
  }
}

template <typename A, typename B>
::testing::AssertionResult close(const std::vector<A>& actual, const std::vector<B>& expected,
                                 double atol, double rtol) {
  return all_close(as_double(actual), as_double(expected), atol, rtol);
}

// Root mean square of a reference, to scale a bf16 atol to the values' magnitude.
template <typename T>
double rms(const std::vector<T>& v) {
  double s = 0;
  for (double x : as_double(v)) s += x * x;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

}  // namespace remoe::test
