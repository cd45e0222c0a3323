#include "tests/test_util.h"

namespace remoe::test {
namespace {

struct MatmulCase {
  int64_t M, N, K;
  bool trans_a, trans_b;
};

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {};

Shape a_shape(const MatmulCase& c) { return c.trans_a ? Shape{c.K, c.M} : Shape{c.M, c.K}; }
Shape b_shape(const MatmulCase& c) { return c.trans_b ? Shape{c.N, c.K} : Shape{c.K, c.N}; }

TEST_P(MatmulTest, ForwardMatchesTripleLoop) {
  const MatmulCase c = GetParam();
  Rng rng(1);
  const Tensor a = randn(a_shape(c), DType::f64, rng), b = randn(b_shape(c), DType::f64, rng);
  const Tensor y = ops::matmul(a, b, c.trans_a, c.trans_b);
  ASSERT_EQ(y.shape(), (Shape{c.M, c.N}));
  const double* A = a.data<double>();
  const double* B = b.data<double>();
  std::vector<double> expected(size_t(c.M * c.N));
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < c.K; ++p)
        acc += (c.trans_a ? A[p * c.M + i] : A[i * c.K + p]) *
               (c.trans_b ? B[j * c.K + p] : B[p * c.N + j]);
      expected[size_t(i * c.N + j)] = acc;
    }
  EXPECT_TRUE(all_close(values(y), expected, 1e-12, 1e-12));
}

TEST_P(MatmulTest, GradCheck) {
  const MatmulCase c = GetParam();
  Rng rng(2);
  const Tensor a = param(a_shape(c), rng, "a"), b = param(b_shape(c), rng, "b");
  expect_gradcheck([&](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], c.trans_a, c.trans_b); },
                   {a, b});
}

TEST_P(MatmulTest, Float32AgreesWithFloat64) {
  const MatmulCase c = GetParam();
  Rng rng(3);
  const Tensor a = randn(a_shape(c), DType::f64, rng), b = randn(b_shape(c), DType::f64, rng);
  const Tensor y64 = ops::matmul(a, b, c.trans_a, c.trans_b);
  const Tensor y32 = ops::matmul(ops::cast(a, DType::f32), ops::cast(b, DType::f32), c.trans_a, c.trans_b);
  EXPECT_TRUE(all_close(y32, y64, 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulTest,
                         ::testing::Values(MatmulCase{1, 1, 1, false, false},
                                           MatmulCase{3, 5, 7, false, false},
                                           MatmulCase{3, 5, 7, false, true},
                                           MatmulCase{3, 5, 7, true, false},
                                           MatmulCase{6, 4, 9, true, true},
                                           MatmulCase{1, 13, 2, false, true}));

TEST(Matmul, LinearIsXTimesWTransposed) {
  Rng rng(4);
  const Tensor x = randn({4, 3}, DType::f64, rng), w = randn({5, 3}, DType::f64, rng);
  EXPECT_TRUE(all_close(ops::linear(x, w), ops::matmul(x, w, false, true), 0, 0));
}

TEST(Matmul, InnerDimensionMismatchNamesOpAndShapes) {
  const Tensor a = Tensor::zeros({2, 3}, DType::f32), b = Tensor::zeros({4, 5}, DType::f32);
  const std::string msg = error_of([&] { ops::matmul(a, b); });
  EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 5)"), std::string::npos) << msg;
}

TEST(Matmul, DtypeMismatchAndWrongRankAreErrors) {
  const Tensor a = Tensor::zeros({2, 3}, DType::f32), b = Tensor::zeros({3, 2}, DType::f64);
  EXPECT_NE(error_of([&] { ops::matmul(a, b); }).find("dtypes differ"), std::string::npos);
  const Tensor v = Tensor::zeros({3}, DType::f32);
  EXPECT_NE(error_of([&] { ops::matmul(v, a); }).find("must be 2-D"), std::string::npos);
  const Tensor i = Tensor::zeros({2, 2}, DType::i32);
  EXPECT_NE(error_of([&] { ops::matmul(i, i); }).find("i32"), std::string::npos);
}

}  // namespace
}  // namespace remoe::test
