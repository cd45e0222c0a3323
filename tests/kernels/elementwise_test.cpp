#include "tests/test_util.h"

namespace remoe::test {
namespace {

class ElementwiseTest : public ::testing::TestWithParam<Shape> {};

TEST_P(ElementwiseTest, AddAndScaleForwardAndGradCheck) {
  Rng rng(1);
  const Tensor a = param(GetParam(), rng, "a"), b = param(GetParam(), rng, "b");
  const std::vector<double> av = values(a), bv = values(b);
  std::vector<double> sum(av.size()), scaled(av.size());
  for (size_t i = 0; i < av.size(); ++i) {
    sum[i] = av[i] + bv[i];
    scaled[i] = -1.5 * av[i];
  }
  EXPECT_TRUE(all_close(values(ops::add(a, b)), sum, 0, 0));
  EXPECT_TRUE(all_close(values(ops::scale(a, -1.5)), scaled, 0, 0));
  clear_tape();
  expect_gradcheck([](const std::vector<Tensor>& in) { return ops::add(in[0], ops::scale(in[1], -1.5)); },
                   {a, b});
  expect_gradcheck([](const std::vector<Tensor>& in) { return ops::reshape(in[0], {in[0].numel()}); }, {a});
}

INSTANTIATE_TEST_SUITE_P(Shapes, ElementwiseTest,
                         ::testing::Values(Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 3, 4}));

TEST(Elementwise, AddInPlaceIsNotRecorded) {
  Tensor y = Tensor::from_vector<float>({3}, {1, 2, 3});
  y.set_requires_grad(true);
  ops::add_(y, Tensor::from_vector<float>({3}, {10, 20, 30}));
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{11, 22, 33}));
  EXPECT_EQ(tape_size(), 0u);
}

TEST(Elementwise, MismatchesNameTheOpAndShapes) {
  const Tensor a = Tensor::zeros({2, 3}, DType::f32), b = Tensor::zeros({3, 2}, DType::f32);
  const std::string msg = error_of([&] { ops::add(a, b); });
  EXPECT_NE(msg.find("add"), std::string::npos);
  EXPECT_NE(msg.find("(3, 2)"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { ops::add(a, Tensor::zeros({2, 3}, DType::f64)); }).find("dtypes differ"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ops::scale(Tensor::zeros({2}, DType::bf16), 2.0); }).find("cast bf16 first"),
            std::string::npos);
}

}  // namespace
}  // namespace remoe::test
