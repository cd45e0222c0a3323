#include <cmath>

#include "autodiff/ops.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

std::vector<double> swiglu_reference(const Tensor& a, const Tensor& b) {
  const std::vector<double> av = values(a), bv = values(b);
  std::vector<double> h(av.size());
  for (size_t i = 0; i < av.size(); ++i) h[i] = av[i] / (1 + std::exp(-av[i])) * bv[i];
  return h;
}

class SwigluTest : public ::testing::TestWithParam<Shape> {};

TEST_P(SwigluTest, ForwardMatchesFormula) {
  Rng rng(1);
  const Tensor a = randn(GetParam(), DType::f64, rng, 2.0), b = randn(GetParam(), DType::f64, rng);
  const Tensor h = ops::swiglu(a, b);
  ASSERT_EQ(h.shape(), GetParam());
  EXPECT_TRUE(all_close(values(h), swiglu_reference(a, b), 1e-12, 1e-12));
}

TEST_P(SwigluTest, GradCheck) {
  Rng rng(2);
  const Tensor a = param(GetParam(), rng, "a", 2.0), b = param(GetParam(), rng, "b");
  expect_gradcheck([](const std::vector<Tensor>& in) { return ops::swiglu(in[0], in[1]); }, {a, b});
}

TEST_P(SwigluTest, Float32AgreesWithFloat64) {
  Rng rng(3);
  Tensor a = randn(GetParam(), DType::f64, rng, 2.0), b = randn(GetParam(), DType::f64, rng);
  Tensor a32 = ops::cast(a, DType::f32), b32 = ops::cast(b, DType::f32);
  for (Tensor* t : {&a, &b, &a32, &b32}) t->set_requires_grad(true);
  const Tensor seed = randn(GetParam(), DType::f64, rng);
  const Tensor h = ops::swiglu(a, b);
  backward(h, seed);
  const Tensor h32 = ops::swiglu(a32, b32);
  EXPECT_TRUE(all_close(h32, h, 1e-5, 1e-4));
  backward(h32, ops::cast(seed, DType::f32));
  EXPECT_TRUE(all_close(a32.grad(), a.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(b32.grad(), b.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluTest,
                         ::testing::Values(Shape{1}, Shape{1, 5}, Shape{3, 7}, Shape{7, 13},
                                           Shape{2, 3, 5}));

TEST(Swiglu, HandComputedValuesAndDerivatives) {
  // silu(0) = 0, silu'(0) = 1/2; silu(1) = σ(1); silu'(1) = σ(1)(1 + (1 − σ(1))).
  const double s1 = 1 / (1 + std::exp(-1.0));
  Tensor a = Tensor::from_vector<double>({2}, {0, 1});
  Tensor b = Tensor::from_vector<double>({2}, {3, -2});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  const Tensor h = ops::swiglu(a, b);
  EXPECT_TRUE(all_close(values(h), {0, -2 * s1}, 1e-15, 1e-15));
  backward(h, Tensor::full({2}, 1.0, DType::f64));
  EXPECT_TRUE(all_close(values(a.grad()), {3 * 0.5, -2 * s1 * (2 - s1)}, 1e-15, 1e-15));
  EXPECT_TRUE(all_close(values(b.grad()), {0, s1}, 1e-15, 1e-15));
}

TEST(Swiglu, LargeInputsStayFinite) {
  // silu(a) → a for a ≫ 0 and → 0 for a ≪ 0, without overflow in exp.
  for (DType dtype : {DType::f64, DType::f32}) {
    Tensor a = ops::cast(Tensor::from_vector<double>({4}, {1000, -1000, 90, -90}), dtype);
    Tensor b = ops::cast(Tensor::from_vector<double>({4}, {2, 2, 2, 2}), dtype);
    a.set_requires_grad(true);
    const Tensor h = ops::swiglu(a, b);
    EXPECT_TRUE(all_close(values(h), {2000, 0, 180, 0}, 1e-12, 1e-6));
    backward(h, ops::cast(Tensor::full({4}, 1.0, DType::f64), dtype));
    EXPECT_TRUE(all_close(values(a.grad()), {2, 0, 2, 0}, 1e-12, 1e-6));
  }
}

TEST(Swiglu, OnlyTheInputThatRequiresGradGetsOne) {
  Rng rng(4);
  Tensor a = randn({3, 5}, DType::f64, rng), b = randn({3, 5}, DType::f64, rng);
  b.set_requires_grad(true);
  backward(ops::swiglu(a, b), Tensor::full({3, 5}, 1.0, DType::f64));
  EXPECT_FALSE(a.grad().defined());
  // dh/db = silu(a): with b = 1 that is the forward itself.
  EXPECT_TRUE(all_close(values(b.grad()),
                        swiglu_reference(a, Tensor::full({3, 5}, 1.0, DType::f64)), 1e-15, 1e-15));
}

TEST(Swiglu, ShapeAndDtypeMismatchAreErrors) {
  std::string msg = error_of(
      [&] { ops::swiglu(Tensor::zeros({3, 5}, DType::f32), Tensor::zeros({5, 3}, DType::f32)); });
  EXPECT_NE(msg.find("swiglu"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(5, 3)"), std::string::npos) << msg;
  msg = error_of(
      [&] { ops::swiglu(Tensor::zeros({3}, DType::f32), Tensor::zeros({3}, DType::f64)); });
  EXPECT_NE(msg.find("dtypes differ"), std::string::npos) << msg;
  msg = error_of(
      [&] { ops::swiglu(Tensor::zeros({3}, DType::i32), Tensor::zeros({3}, DType::i32)); });
  EXPECT_NE(msg.find("i32 is not supported"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
