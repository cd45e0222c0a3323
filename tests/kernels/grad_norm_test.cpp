#include "tests/test_util.h"

namespace remoe::test {
namespace {

std::vector<Tensor> params_with_grads(const std::vector<std::vector<double>>& grads) {
  std::vector<Tensor> params;
  for (const auto& g : grads) {
    Tensor p = Tensor::zeros({int64_t(g.size())}, DType::f64);
    p.set_requires_grad(true).set_grad(Tensor::from_vector<double>({int64_t(g.size())}, g));
    params.push_back(p);
  }
  return params;
}

TEST(GradNorm, IsTheNormOverAllTensorsSkippingMissingGrads) {
  auto params = params_with_grads({{3.0}, {0.0, 4.0}});
  Tensor no_grad = Tensor::zeros({5}, DType::f64);
  no_grad.set_requires_grad(true);
  params.push_back(no_grad);
  EXPECT_DOUBLE_EQ(ops::grad_norm(params), 5.0);
}

TEST(GradNorm, ClipScalesByMaxOverNormPlusEpsilon) {
  const auto params = params_with_grads({{3.0}, {0.0, 4.0}});
  const double before = ops::clip_grad_norm(params, 1.0);
  EXPECT_DOUBLE_EQ(before, 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_TRUE(all_close(values(params[0].grad()), {3.0 * coef}, 0, 1e-15));
  EXPECT_TRUE(all_close(values(params[1].grad()), {0.0, 4.0 * coef}, 0, 1e-15));
  EXPECT_NEAR(ops::grad_norm(params), 1.0, 1e-6);
}

TEST(GradNorm, NoClipBelowTheThreshold) {
  const auto params = params_with_grads({{0.3, -0.4}});
  EXPECT_DOUBLE_EQ(ops::clip_grad_norm(params, 1.0), 0.5);
  EXPECT_EQ(values(params[0].grad()), (std::vector<double>{0.3, -0.4}));
  EXPECT_NE(error_of([&] { ops::clip_grad_norm(params, 0.0); }).find("max_norm"), std::string::npos);
}

}  // namespace
}  // namespace remoe::test
