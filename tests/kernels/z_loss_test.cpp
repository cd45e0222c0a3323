// The router z-loss (kernels/z_loss.h): a hand-computed value, f64 gradient checks over the
// edges, f32 against f64, errors.
#include <cmath>

#include "tests/test_util.h"

namespace remoe::test {
namespace {

Tensor f64(const Shape& shape, const std::vector<double>& v) {
  return Tensor::from_vector<double>(shape, v);
}

TEST(ZLoss, HandComputed) {
  // Row 0: lse = log 2; row 1: log(3 + 1) = 2 log 2. loss = c/2 · (1 + 4) (log 2)².
  const double ln2 = std::log(2.0);
  for (DType dtype : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor z = ops::cast(f64({2, 2}, {0.0, 0.0, std::log(3.0), 0.0}), dtype);
    const double tol = dtype == DType::f64 ? 1e-15 : 1e-7;
    EXPECT_NEAR(ops::z_loss(z, 0.1).item(), 0.1 / 2 * 5 * ln2 * ln2, tol);
    EXPECT_EQ(ops::z_loss(z, 0.0).item(), 0.0);
  }
  // Large logits stay finite: lse = 1000 + log 2.
  EXPECT_NEAR(ops::z_loss(f64({1, 2}, {1000.0, 1000.0}), 1.0).item(),
              (1000 + ln2) * (1000 + ln2), 1e-9);
  EXPECT_EQ(ops::z_loss(Tensor::zeros({0, 3}, DType::f64), 1.0).item(), 0.0);
}

TEST(ZLoss, GradientIsTwoLseTimesSoftmax) {
  Tensor z = f64({1, 3}, {1.0, 2.0, 3.0});
  z.set_requires_grad(true).set_name("z");
  backward(ops::z_loss(z, 0.5));
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  std::vector<double> expected;
  for (double v : {1.0, 2.0, 3.0}) expected.push_back(0.5 * 2 * lse * std::exp(v - lse));
  EXPECT_TRUE(all_close(values(z.grad()), expected, 1e-14, 1e-14));
}

class ZLossTest : public ::testing::TestWithParam<std::pair<int64_t, int64_t>> {};

TEST_P(ZLossTest, GradCheck) {
  const auto [T, E] = GetParam();
  Rng rng(3);
  const Tensor z = param({T, E}, rng, "z", 2.0);
  expect_gradcheck([](const std::vector<Tensor>& in) { return ops::z_loss(in[0], 0.3); }, {z});
}

TEST_P(ZLossTest, Float32AgreesWithFloat64) {
  const auto [T, E] = GetParam();
  Rng rng(4);
  const Tensor raw = randn({T, E}, DType::f64, rng, 2.0);
  Tensor z64 = raw, z32 = ops::cast(raw, DType::f32);
  z64.set_requires_grad(true);
  z32.set_requires_grad(true);
  const Tensor l64 = ops::z_loss(z64, 0.3);
  backward(l64);
  const Tensor l32 = ops::z_loss(z32, 0.3);
  backward(l32);
  EXPECT_NEAR(l32.item(), l64.item(), 1e-5 + 1e-4 * std::abs(l64.item()));
  EXPECT_TRUE(all_close(z32.grad(), z64.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, ZLossTest,
                         ::testing::Values(std::pair<int64_t, int64_t>{1, 1},
                                           std::pair<int64_t, int64_t>{1, 4},
                                           std::pair<int64_t, int64_t>{7, 5},
                                           std::pair<int64_t, int64_t>{13, 8}));

TEST(ZLoss, Errors) {
  std::string msg = error_of([] { ops::z_loss(Tensor::zeros({4}, DType::f32), 1.0); });
  EXPECT_NE(msg.find("z_loss"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2-D"), std::string::npos) << msg;
  msg = error_of([] { ops::z_loss(Tensor::zeros({2, 3}, DType::i32), 1.0); });
  EXPECT_NE(msg.find("f32 or f64"), std::string::npos) << msg;
  msg = error_of([] { ops::z_loss(Tensor::zeros({2, 0}, DType::f32), 1.0); });
  EXPECT_NE(msg.find("E = 0"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
