#include <cmath>

#include "autodiff/ops.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

Tensor targets_of(const std::vector<int32_t>& t) {
  return Tensor::from_vector<int32_t>({int64_t(t.size())}, t);
}

// Mean over the non-ignored rows of −log softmax(z)[target], straight from the definition
// (no max subtraction: the logits used with it are moderate).
double cross_entropy_reference(const Tensor& logits, const std::vector<int32_t>& targets) {
  const std::vector<double> z = values(logits);
  const size_t V = size_t(logits.dim(1));
  double total = 0;
  int n = 0;
  for (size_t t = 0; t < targets.size(); ++t) {
    if (targets[t] < 0) continue;
    double sum = 0;
    for (size_t v = 0; v < V; ++v) sum += std::exp(z[t * V + v]);
    total += -(z[t * V + size_t(targets[t])] - std::log(sum));
    ++n;
  }
  return n > 0 ? total / n : 0.0;
}

struct CrossEntropyCase {
  int64_t n_tokens, vocab;
  bool with_ignored;  // every third position (0, 3, 6, ...) ignored, not all of them
};

std::vector<int32_t> make_targets(const CrossEntropyCase& c, Rng& rng) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < c.n_tokens; ++i)
    t.push_back(c.with_ignored && i % 3 == 0 ? -1 : int32_t(rng.below(c.vocab)));
  return t;
}

class CrossEntropyTest : public ::testing::TestWithParam<CrossEntropyCase> {};

TEST_P(CrossEntropyTest, ForwardMatchesLogSoftmax) {
  const CrossEntropyCase c = GetParam();
  Rng rng(1);
  const std::vector<int32_t> targets = make_targets(c, rng);
  const Tensor logits = randn({c.n_tokens, c.vocab}, DType::f64, rng, 3.0);
  const Tensor loss = ops::cross_entropy(logits, targets_of(targets));
  EXPECT_EQ(loss.ndim(), 0);
  EXPECT_NEAR(loss.item(), cross_entropy_reference(logits, targets), 1e-12);
}

TEST_P(CrossEntropyTest, GradCheckOnLogits) {
  const CrossEntropyCase c = GetParam();
  Rng rng(2);
  const Tensor targets = targets_of(make_targets(c, rng));
  const Tensor logits = param({c.n_tokens, c.vocab}, rng, "logits", 2.0);
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) { return ops::cross_entropy(in[0], targets); }, {logits});
}

TEST_P(CrossEntropyTest, Float32AgreesWithFloat64) {
  const CrossEntropyCase c = GetParam();
  Rng rng(3);
  const Tensor targets = targets_of(make_targets(c, rng));
  Tensor logits = randn({c.n_tokens, c.vocab}, DType::f64, rng, 3.0);
  Tensor logits32 = ops::cast(logits, DType::f32);
  logits.set_requires_grad(true);
  logits32.set_requires_grad(true);
  const Tensor loss = ops::cross_entropy(logits, targets);
  backward(loss);
  const Tensor loss32 = ops::cross_entropy(logits32, targets);
  EXPECT_TRUE(all_close(loss32, loss, 1e-5, 1e-4));
  backward(loss32);
  EXPECT_TRUE(all_close(logits32.grad(), logits.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CrossEntropyTest,
                         ::testing::Values(CrossEntropyCase{1, 2, false},
                                           CrossEntropyCase{1, 5, false},
                                           CrossEntropyCase{3, 7, false},
                                           CrossEntropyCase{7, 3, true},
                                           CrossEntropyCase{5, 13, true},
                                           CrossEntropyCase{13, 5, false}));

TEST(CrossEntropy, GradientIsSoftmaxMinusOneHotOverValidCount) {
  // T = 3 with row 1 ignored: n_valid = 2; seed dloss = 4 scales the gradient.
  const Tensor targets = targets_of({2, -1, 0});
  Tensor logits = Tensor::from_vector<double>({3, 3}, {0.5, -1, 2, 3, 3, 3, 0, 0, 0});
  logits.set_requires_grad(true);
  backward(ops::cross_entropy(logits, targets), Tensor::full({}, 4.0, DType::f64));
  const double e0 = std::exp(0.5), e1 = std::exp(-1.0), e2 = std::exp(2.0), s = e0 + e1 + e2;
  const double k = 4.0 / 2;
  EXPECT_TRUE(all_close(values(logits.grad()),
                        {k * e0 / s, k * e1 / s, k * (e2 / s - 1), 0, 0, 0, k * (1.0 / 3 - 1),
                         k / 3, k / 3},
                        1e-14, 1e-13));
}

TEST(CrossEntropy, UniformLogitsGiveLogV) {
  for (int64_t V : {1, 2, 7, 13}) {
    const Tensor logits = Tensor::full({5, V}, 3.7, DType::f64);
    const Tensor loss = ops::cross_entropy(logits, targets_of({0, int32_t(V - 1), -1, 0, 0}));
    EXPECT_NEAR(loss.item(), std::log(double(V)), 1e-14) << "V = " << V;
  }
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  // exp(1000) overflows; the max-subtracted sum does not. The loss is shift-invariant, so the
  // shifted logits give the reference.
  Rng rng(4);
  const std::vector<int32_t> targets = {4, 0, 6};
  for (DType dtype : {DType::f64, DType::f32}) {
    const Tensor shifted = randn({3, 7}, DType::f64, rng);
    std::vector<double> big = values(shifted);
    for (double& v : big) v += 1000;
    Tensor logits = ops::cast(Tensor::from_vector<double>({3, 7}, big), dtype);
    logits.set_requires_grad(true);
    const Tensor loss = ops::cross_entropy(logits, targets_of(targets));
    ASSERT_TRUE(std::isfinite(loss.item()));
    EXPECT_NEAR(loss.item(), cross_entropy_reference(shifted, targets),
                dtype == DType::f64 ? 1e-12 : 1e-4);
    backward(loss);
    for (double g : values(logits.grad())) ASSERT_TRUE(std::isfinite(g));
  }
  // One dominant logit: the loss is ~0 on it and ~1000 elsewhere.
  const Tensor peaked = Tensor::from_vector<double>({2, 3}, {1000, 0, 0, 1000, 0, 0});
  EXPECT_NEAR(ops::cross_entropy(peaked, targets_of({0, 1})).item(), 1000.0 / 2, 1e-9);
}

TEST(CrossEntropy, IgnoredPositionsAreLeftOutOfTheMean) {
  Rng rng(5);
  const Tensor logits = randn({4, 5}, DType::f64, rng);
  const double with_ignored = ops::cross_entropy(logits, targets_of({-1, 2, -1, 4})).item();
  // The same as the loss over rows 1 and 3 alone.
  const std::vector<double> z = values(logits);
  std::vector<double> kept(z.begin() + 5, z.begin() + 10);
  kept.insert(kept.end(), z.begin() + 15, z.end());
  const double subset =
      ops::cross_entropy(Tensor::from_vector<double>({2, 5}, kept), targets_of({2, 4})).item();
  EXPECT_NEAR(with_ignored, subset, 1e-14);
  EXPECT_NEAR(with_ignored, cross_entropy_reference(logits, {-1, 2, -1, 4}), 1e-12);
}

TEST(CrossEntropy, AllIgnoredGivesZeroLossAndZeroGradient) {
  Rng rng(6);
  Tensor logits = randn({3, 5}, DType::f64, rng);
  logits.set_requires_grad(true);
  const Tensor loss = ops::cross_entropy(logits, targets_of({-1, -1, -1}));
  EXPECT_EQ(loss.item(), 0.0);
  backward(loss);
  ASSERT_TRUE(logits.grad().defined());
  EXPECT_TRUE(all_close(values(logits.grad()), std::vector<double>(15, 0.0), 0, 0));
}

TEST(CrossEntropy, BadTargetsNameTheValueAndPosition) {
  const Tensor logits = Tensor::zeros({3, 7}, DType::f32);
  std::string msg = error_of([&] { ops::cross_entropy(logits, targets_of({0, 7, 1})); });
  EXPECT_NE(msg.find("cross_entropy"), std::string::npos) << msg;
  EXPECT_NE(msg.find("target 7 at position 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 7)"), std::string::npos) << msg;
  msg = error_of([&] { ops::cross_entropy(logits, targets_of({0, 1, -2})); });
  EXPECT_NE(msg.find("target -2 at position 2"), std::string::npos) << msg;
}

TEST(CrossEntropy, BadShapesAndDtypesAreErrors) {
  const Tensor logits = Tensor::zeros({3, 7}, DType::f32);
  std::string msg = error_of([&] { ops::cross_entropy(logits, targets_of({0, 1})); });
  EXPECT_NE(msg.find("(2)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 3"), std::string::npos) << msg;
  msg = error_of([&] { ops::cross_entropy(logits, Tensor::zeros({3}, DType::f32)); });
  EXPECT_NE(msg.find("targets must be i32"), std::string::npos) << msg;
  msg = error_of([&] { ops::cross_entropy(Tensor::zeros({7}, DType::f32), targets_of({0})); });
  EXPECT_NE(msg.find("logits must be 2-D"), std::string::npos) << msg;
  msg = error_of([&] { ops::cross_entropy(Tensor::zeros({1, 2}, DType::i32), targets_of({0})); });
  EXPECT_NE(msg.find("i32 is not supported"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
