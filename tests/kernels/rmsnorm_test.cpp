#include <cmath>

#include "autodiff/ops.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

// y[r, j] = x[r, j] / sqrt(mean_k x[r, k]² + eps) · w[j], written out directly.
std::vector<double> rmsnorm_reference(const Tensor& x, const Tensor& w, double eps) {
  const std::vector<double> xv = values(x), wv = values(w);
  const size_t dim = wv.size(), rows = xv.size() / dim;
  std::vector<double> y(xv.size());
  for (size_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (size_t j = 0; j < dim; ++j) ms += xv[r * dim + j] * xv[r * dim + j];
    ms /= double(dim);
    for (size_t j = 0; j < dim; ++j) y[r * dim + j] = xv[r * dim + j] / std::sqrt(ms + eps) * wv[j];
  }
  return y;
}

struct RmsnormCase {
  Shape x_shape;
  double eps;
};

class RmsnormTest : public ::testing::TestWithParam<RmsnormCase> {};

TEST_P(RmsnormTest, ForwardMatchesFormula) {
  const RmsnormCase c = GetParam();
  Rng rng(1);
  const Tensor x = randn(c.x_shape, DType::f64, rng);
  const Tensor w = randn({c.x_shape.back()}, DType::f64, rng);
  const Tensor y = ops::rmsnorm(x, w, c.eps);
  ASSERT_EQ(y.shape(), c.x_shape);
  EXPECT_TRUE(all_close(values(y), rmsnorm_reference(x, w, c.eps), 1e-12, 1e-12));
}

TEST_P(RmsnormTest, GradCheck) {
  const RmsnormCase c = GetParam();
  Rng rng(2);
  const Tensor x = param(c.x_shape, rng, "x");
  const Tensor w = param({c.x_shape.back()}, rng, "w");
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) { return ops::rmsnorm(in[0], in[1], c.eps); }, {x, w});
}

TEST_P(RmsnormTest, Float32AgreesWithFloat64) {
  const RmsnormCase c = GetParam();
  Rng rng(3);
  Tensor x = randn(c.x_shape, DType::f64, rng), w = randn({c.x_shape.back()}, DType::f64, rng);
  Tensor x32 = ops::cast(x, DType::f32), w32 = ops::cast(w, DType::f32);
  for (Tensor* t : {&x, &w, &x32, &w32}) t->set_requires_grad(true);
  const Tensor seed = randn(c.x_shape, DType::f64, rng);
  backward(ops::rmsnorm(x, w, c.eps), seed);
  const Tensor y32 = ops::rmsnorm(x32, w32, c.eps);
  EXPECT_TRUE(all_close(values(y32), rmsnorm_reference(x, w, c.eps), 1e-5, 1e-4));
  backward(y32, ops::cast(seed, DType::f32));
  EXPECT_TRUE(all_close(values(x32.grad()), values(x.grad()), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(values(w32.grad()), values(w.grad()), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsnormTest,
                         ::testing::Values(RmsnormCase{{1}, 0.5}, RmsnormCase{{7}, 1e-6},
                                           RmsnormCase{{1, 5}, 1e-5}, RmsnormCase{{3, 7}, 1e-5},
                                           RmsnormCase{{2, 3, 13}, 1e-6},
                                           RmsnormCase{{2, 1, 3, 4}, 0.5},
                                           RmsnormCase{{3, 70}, 1e-5}));  // d spans two dw blocks

TEST(Rmsnorm, AllZeroRowUsesRstdOfOneOverSqrtEps) {
  // Row 1 is all zeros: y = 0 there, and with n = 0 the gradient reduces to
  // dx = dy ⊙ w / sqrt(eps).
  const double eps = 1e-4;
  Tensor x = Tensor::from_vector<double>({3, 3}, {1, -2, 0.5, 0, 0, 0, 3, 1, -1});
  Tensor w = Tensor::from_vector<double>({3}, {0.5, 2, -1});
  x.set_requires_grad(true);
  const Tensor y = ops::rmsnorm(x, w, eps);
  const std::vector<double> yv = values(y);
  EXPECT_TRUE(all_close(values(y), rmsnorm_reference(x, w, eps), 1e-12, 1e-12));
  for (int j = 3; j < 6; ++j) EXPECT_EQ(yv[size_t(j)], 0.0);
  const Tensor seed = Tensor::from_vector<double>({3, 3}, {0, 0, 0, 1, 2, 3, 0, 0, 0});
  backward(y, seed);
  const std::vector<double> dx = values(x.grad());
  const double rstd = 1 / std::sqrt(eps);
  EXPECT_TRUE(all_close({dx[3], dx[4], dx[5]}, {1 * 0.5 * rstd, 2 * 2 * rstd, 3 * -1 * rstd},
                        1e-12, 1e-12));
  EXPECT_TRUE(all_close({dx[0], dx[1], dx[2], dx[6], dx[7], dx[8]}, {0, 0, 0, 0, 0, 0}, 0, 0));
}

TEST(Rmsnorm, GradCheckWithAZeroRow) {
  Rng rng(4);
  Tensor x = param({3, 5}, rng, "x");
  double* xp = x.data<double>();
  for (int j = 5; j < 10; ++j) xp[j] = 0;
  const Tensor w = param({5}, rng, "w");
  expect_gradcheck([&](const std::vector<Tensor>& in) { return ops::rmsnorm(in[0], in[1], 1e-2); },
                   {x, w});
}

TEST(Rmsnorm, OnlyTheTensorsThatRequireGradGetOne) {
  Rng rng(5);
  Tensor x = randn({2, 3}, DType::f64, rng);
  Tensor w = randn({3}, DType::f64, rng);
  w.set_requires_grad(true);
  backward(ops::rmsnorm(x, w, 1e-5), Tensor::full({2, 3}, 1.0, DType::f64));
  EXPECT_FALSE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  // dw[j] = Σ_r x[r, j] · rstd[r] with dy = 1: the normalised x summed over rows.
  const std::vector<double> n =
      rmsnorm_reference(x, Tensor::full({3}, 1.0, DType::f64), 1e-5);
  EXPECT_TRUE(all_close(values(w.grad()), {n[0] + n[3], n[1] + n[4], n[2] + n[5]}, 1e-12, 1e-12));
}

TEST(Rmsnorm, BadShapesDtypesAndEpsAreErrors) {
  const Tensor x = Tensor::zeros({4, 6}, DType::f32);
  std::string msg = error_of([&] { ops::rmsnorm(x, Tensor::zeros({5}, DType::f32), 1e-5); });
  EXPECT_NE(msg.find("rmsnorm"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 6)"), std::string::npos) << msg;
  msg = error_of([&] { ops::rmsnorm(x, Tensor::zeros({6}, DType::f64), 1e-5); });
  EXPECT_NE(msg.find("dtypes differ"), std::string::npos) << msg;
  msg = error_of([&] { ops::rmsnorm(x, Tensor::zeros({1, 6}, DType::f32), 1e-5); });
  EXPECT_NE(msg.find("w must be 1-D"), std::string::npos) << msg;
  msg = error_of(
      [&] { ops::rmsnorm(Tensor::zeros({}, DType::f32), Tensor::zeros({1}, DType::f32), 1e-5); });
  EXPECT_NE(msg.find("at least 1 dimension"), std::string::npos) << msg;
  msg = error_of([&] { ops::rmsnorm(x, Tensor::zeros({6}, DType::f32), -1.0); });
  EXPECT_NE(msg.find("eps"), std::string::npos) << msg;
  msg = error_of(
      [&] { ops::rmsnorm(Tensor::zeros({2}, DType::i32), Tensor::zeros({2}, DType::i32), 1e-5); });
  EXPECT_NE(msg.find("i32 is not supported"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
