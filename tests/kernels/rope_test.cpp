#include <cmath>

#include "autodiff/ops.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

constexpr double kBase = 10000.0;

// The contract of kernels/rope.h written out: pair (i, i + Dh/2) of the row at position s is
// rotated by s · base^(-2i/Dh).
std::vector<double> rope_reference(const Tensor& x, double base) {
  const int64_t B = x.dim(0), S = x.dim(1), H = x.dim(2), Dh = x.dim(3), half = Dh / 2;
  const std::vector<double> xv = values(x);
  std::vector<double> y(xv.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        const size_t row = size_t(((b * S + s) * H + h) * Dh);
        for (int64_t i = 0; i < half; ++i) {
          const double theta = double(s) * std::pow(base, -2.0 * double(i) / double(Dh));
          const double x1 = xv[row + size_t(i)], x2 = xv[row + size_t(i + half)];
          y[row + size_t(i)] = x1 * std::cos(theta) - x2 * std::sin(theta);
          y[row + size_t(i + half)] = x2 * std::cos(theta) + x1 * std::sin(theta);
        }
      }
  return y;
}

struct RopeCase {
  Shape shape;  // (B, S, H, Dh)
  double base;
};

class RopeTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeTest, ForwardMatchesContract) {
  const RopeCase c = GetParam();
  Rng rng(1);
  const Tensor x = randn(c.shape, DType::f64, rng);
  const Tensor y = ops::rope(x, c.base);
  ASSERT_EQ(y.shape(), c.shape);
  EXPECT_TRUE(all_close(values(y), rope_reference(x, c.base), 1e-12, 1e-12));
}

TEST_P(RopeTest, PreservesTheNormOfEveryPair) {
  const RopeCase c = GetParam();
  Rng rng(2);
  const Tensor x = randn(c.shape, DType::f64, rng);
  const std::vector<double> xv = values(x), yv = values(ops::rope(x, c.base));
  const int64_t Dh = c.shape[3], half = Dh / 2;
  for (size_t row = 0; row < xv.size(); row += size_t(Dh))
    for (int64_t i = 0; i < half; ++i) {
      const size_t p = row + size_t(i), q = row + size_t(i + half);
      EXPECT_NEAR(yv[p] * yv[p] + yv[q] * yv[q], xv[p] * xv[p] + xv[q] * xv[q], 1e-12);
    }
}

TEST_P(RopeTest, GradCheck) {
  const RopeCase c = GetParam();
  Rng rng(3);
  const Tensor x = param(c.shape, rng, "x");
  expect_gradcheck([&](const std::vector<Tensor>& in) { return ops::rope(in[0], c.base); }, {x});
}

TEST_P(RopeTest, Float32AgreesWithFloat64) {
  const RopeCase c = GetParam();
  Rng rng(4);
  Tensor x = randn(c.shape, DType::f64, rng);
  Tensor x32 = ops::cast(x, DType::f32);
  x.set_requires_grad(true);
  x32.set_requires_grad(true);
  const Tensor seed = randn(c.shape, DType::f64, rng);
  const Tensor y = ops::rope(x, c.base);
  backward(y, seed);
  const Tensor y32 = ops::rope(x32, c.base);
  EXPECT_TRUE(all_close(y32, y, 1e-5, 1e-4));
  backward(y32, ops::cast(seed, DType::f32));
  EXPECT_TRUE(all_close(x32.grad(), x.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(RopeCase{{1, 1, 1, 2}, kBase},
                                           RopeCase{{1, 3, 1, 4}, kBase},
                                           RopeCase{{2, 5, 3, 6}, kBase},
                                           RopeCase{{1, 7, 2, 10}, 10.0},
                                           RopeCase{{2, 3, 1, 2}, 500000.0},
                                           RopeCase{{1, 13, 1, 8}, 1e6}));

TEST(Rope, HandComputedTinyCase) {
  // Dh = 4, S = 3, base = 100: pair (0, 2) turns by s rad, pair (1, 3) by s · 100^(-1/2) = s/10.
  const std::vector<double> row = {1, 2, 3, 4};
  std::vector<double> xs;
  for (int s = 0; s < 3; ++s) xs.insert(xs.end(), row.begin(), row.end());
  const Tensor x = Tensor::from_vector<double>({1, 3, 1, 4}, xs);
  std::vector<double> expected = row;  // position 0
  for (double s : {1.0, 2.0}) {
    const double a = s, b = s / 10;
    expected.push_back(1 * std::cos(a) - 3 * std::sin(a));
    expected.push_back(2 * std::cos(b) - 4 * std::sin(b));
    expected.push_back(3 * std::cos(a) + 1 * std::sin(a));
    expected.push_back(4 * std::cos(b) + 2 * std::sin(b));
  }
  EXPECT_TRUE(all_close(values(ops::rope(x, 100.0)), expected, 1e-14, 1e-14));
}

TEST(Rope, PositionZeroIsTheIdentityInEveryBatchAndHead) {
  Rng rng(5);
  const Tensor x = randn({3, 4, 2, 6}, DType::f64, rng);
  const std::vector<double> xv = values(x), yv = values(ops::rope(x, kBase));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t j = 0; j < 2 * 6; ++j) {
      const size_t k = size_t(b * 4 * 2 * 6 + j);  // s = 0
      EXPECT_EQ(yv[k], xv[k]) << "batch " << b << ", element " << j;
    }
}

TEST(Rope, PositionsRestartInEachSequence) {
  // Two identical sequences in a batch get identical rotations.
  Rng rng(6);
  const Tensor one = randn({1, 5, 2, 4}, DType::f64, rng);
  std::vector<double> twice = values(one);
  twice.insert(twice.end(), twice.begin(), twice.end());
  const std::vector<double> y1 = values(ops::rope(one, kBase));
  const std::vector<double> y2 =
      values(ops::rope(Tensor::from_vector<double>({2, 5, 2, 4}, twice), kBase));
  EXPECT_TRUE(all_close({y2.begin(), y2.begin() + 40}, y1, 0, 0));
  EXPECT_TRUE(all_close({y2.begin() + 40, y2.end()}, y1, 0, 0));
}

TEST(Rope, DotProductDependsOnlyOnRelativePosition) {
  // The property RoPE exists for: <rope(q)_s, rope(k)_t> is a function of s − t.
  Rng rng(7);
  const int64_t S = 6, Dh = 8;
  const std::vector<double> q = values(randn({Dh}, DType::f64, rng));
  const std::vector<double> k = values(randn({Dh}, DType::f64, rng));
  std::vector<double> qs, ks;
  for (int64_t s = 0; s < S; ++s) {
    qs.insert(qs.end(), q.begin(), q.end());
    ks.insert(ks.end(), k.begin(), k.end());
  }
  auto rotated = [&](const std::vector<double>& v) {
    return values(ops::rope(Tensor::from_vector<double>({1, S, 1, Dh}, v), 50.0));
  };
  const std::vector<double> rq = rotated(qs), rk = rotated(ks);
  auto dot = [&](int64_t s, int64_t t) {
    double acc = 0;
    for (int64_t j = 0; j < Dh; ++j) acc += rq[size_t(s * Dh + j)] * rk[size_t(t * Dh + j)];
    return acc;
  };
  for (int64_t s = 0; s + 1 < S; ++s)
    for (int64_t t = 0; t + 1 < S; ++t) EXPECT_NEAR(dot(s + 1, t + 1), dot(s, t), 1e-12);
}

TEST(Rope, BaseChangesOnlyTheHigherPairs) {
  // Pair 0 turns by s whatever the base; pair 1 (Dh = 4) by s / sqrt(base).
  Rng rng(8);
  const Tensor x = randn({1, 4, 1, 4}, DType::f64, rng);
  const std::vector<double> a = values(ops::rope(x, 10.0)), b = values(ops::rope(x, 10000.0));
  for (int64_t s = 1; s < 4; ++s) {
    EXPECT_EQ(a[size_t(s * 4 + 0)], b[size_t(s * 4 + 0)]);
    EXPECT_EQ(a[size_t(s * 4 + 2)], b[size_t(s * 4 + 2)]);
    EXPECT_GT(std::abs(a[size_t(s * 4 + 1)] - b[size_t(s * 4 + 1)]), 1e-3);
  }
}

TEST(Rope, BadShapesAndBaseAreErrors) {
  std::string msg = error_of([&] { ops::rope(Tensor::zeros({1, 3, 2, 5}, DType::f32), kBase); });
  EXPECT_NE(msg.find("rope"), std::string::npos) << msg;
  EXPECT_NE(msg.find("even"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(1, 3, 2, 5)"), std::string::npos) << msg;
  msg = error_of([&] { ops::rope(Tensor::zeros({3, 2, 4}, DType::f32), kBase); });
  EXPECT_NE(msg.find("x must be 4-D"), std::string::npos) << msg;
  msg = error_of([&] { ops::rope(Tensor::zeros({1, 1, 1, 2}, DType::f32), 0.0); });
  EXPECT_NE(msg.find("base"), std::string::npos) << msg;
  msg = error_of([&] { ops::rope(Tensor::zeros({1, 1, 1, 2}, DType::i32), kBase); });
  EXPECT_NE(msg.find("i32 is not supported"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
