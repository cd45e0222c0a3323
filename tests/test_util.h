// Helpers shared by the tests: random inputs and closeness with stated tolerances.
//
// Tolerance rule, stated once: |actual − expected| ≤ atol + rtol · |expected| elementwise.
// f64 references: atol = rtol = 1e-12 unless a test says why not; f32 vs f64: 1e-5 / 1e-4;
// bf16 (8 bits of mantissa, relative step 2^-8 ≈ 3.9e-3): rtol 1e-2 after a cast back to f32.
// Gradient checks in f64 must have a relative error below kGradTol.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "autodiff/gradcheck.h"
#include "autodiff/ops.h"
#include "autodiff/random.h"
#include "autodiff/tape.h"
#include "autodiff/tensor.h"

namespace remoe::test {

inline constexpr double kGradTol = 1e-6;

// A leaf f64 tensor of N(0, std²) values that requires grad, named for gradcheck reports.
inline Tensor param(const Shape& shape, Rng& rng, const char* name, double std = 1.0) {
  Tensor t = randn(shape, DType::f64, rng, std);
  t.set_requires_grad(true).set_name(name);
  return t;
}

// Values of any float tensor as double, for comparisons.
inline std::vector<double> values(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f64: return t.to_vector<double>();
    case DType::f32: {
      auto v = t.to_vector<float>();
      return {v.begin(), v.end()};
    }
    case DType::i32: {
      auto v = t.to_vector<int32_t>();
      return {v.begin(), v.end()};
    }
    case DType::bf16: {
      auto v = t.to_vector<bf16>();
      std::vector<double> out;
      for (bf16 x : v) out.push_back(bf16_to_float(x));
      return out;
    }
  }
  return {};
}

inline ::testing::AssertionResult all_close(const std::vector<double>& actual,
                                            const std::vector<double>& expected, double atol,
                                            double rtol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure()
           << "sizes differ: " << actual.size() << " vs " << expected.size();
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::abs(actual[i] - expected[i]);
    if (!(err <= atol + rtol * std::abs(expected[i])))
      return ::testing::AssertionFailure()
             << "element " << i << ": " << actual[i] << " vs expected " << expected[i]
             << " (|diff| " << err << " > " << atol << " + " << rtol << "·|expected|)";
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected,
                                            double atol, double rtol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(actual.shape())
                                         << " vs " << shape_str(expected.shape());
  return all_close(values(actual), values(expected), atol, rtol);
}

// Runs gradcheck and fails the test with a per-input report when any error is ≥ kGradTol or
// when a checked input got no gradient at all (a check of nothing proves nothing).
inline void expect_gradcheck(const GradFn& f, const std::vector<Tensor>& inputs) {
  const auto results = gradcheck(f, inputs);
  ASSERT_FALSE(results.empty()) << "no input requires grad";
  for (const auto& r : results) {
    EXPECT_LT(r.rel_error, kGradTol) << report(results);
    EXPECT_GT(r.numeric_norm, 0.0) << r.input << " has a zero gradient: the check is vacuous\n"
                                   << report(results);
  }
}

// A file's whole contents ("" when it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Fails the test, showing both, unless `message` contains `part`.
inline void expect_contains(const std::string& message, const std::string& part) {
  EXPECT_NE(message.find(part), std::string::npos)
      << "message: " << message << "\nexpected it to contain: " << part;
}

// The message of the remoe::Error that `fn` throws; fails the test if it throws none.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a remoe::Error";
  return "";
}

}  // namespace remoe::test
