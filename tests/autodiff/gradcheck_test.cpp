#include "kernels/elementwise.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

// y = 3x, with a backward rule that is deliberately wrong by `factor`.
Tensor scale_by_three(const Tensor& x, double backward_factor) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  cpu::scale_forward(y.data<double>(), x.data<double>(), 3.0, x.numel());
  record("scale_by_three", {x}, {y}, [=] { accumulate_grad(x, ops::scale(y.grad(), backward_factor)); });
  return y;
}

TEST(GradCheck, AcceptsACorrectRule) {
  Rng rng(1);
  const Tensor x = param({4, 3}, rng, "x");
  const auto results = gradcheck([](const std::vector<Tensor>& in) { return scale_by_three(in[0], 3.0); }, {x});
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].input, "x");
  EXPECT_LT(results[0].rel_error, 1e-9);
  EXPECT_GT(results[0].numeric_norm, 0);
}

TEST(GradCheck, CatchesAWrongRule) {
  Rng rng(1);
  const Tensor x = param({4, 3}, rng, "x");
  const auto results = gradcheck([](const std::vector<Tensor>& in) { return scale_by_three(in[0], 2.0); }, {x});
  // analytic = 2/3 of numeric: relative error |2 − 3| / 3.
  EXPECT_NEAR(max_rel_error(results), 1.0 / 3.0, 1e-6);
}

TEST(GradCheck, SkipsInputsWithoutGradAndLeavesNoState) {
  Rng rng(2);
  const Tensor a = param({3}, rng, "a");
  const Tensor b = randn({3}, DType::f64, rng);  // a constant
  const auto results = gradcheck([](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); }, {a, b});
  ASSERT_EQ(results.size(), 1u);
  EXPECT_LT(results[0].rel_error, 1e-9);
  EXPECT_FALSE(a.grad().defined());
  EXPECT_EQ(tape_size(), 0u);
}

TEST(GradCheck, RequiresF64) {
  Tensor x = Tensor::zeros({2}, DType::f32);
  x.set_requires_grad(true);
  EXPECT_NE(error_of([&] { gradcheck([](const std::vector<Tensor>& in) { return in[0]; }, {x}); }).find("f64"),
            std::string::npos);
}

}  // namespace
}  // namespace remoe::test
