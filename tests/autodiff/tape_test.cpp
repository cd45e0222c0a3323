#include "tests/test_util.h"

namespace remoe::test {
namespace {

class Tape : public ::testing::Test {
 protected:
  void SetUp() override { clear_tape(); }
  void TearDown() override { clear_tape(); }
};

TEST_F(Tape, RecordsOnlyWhenAnInputRequiresGrad) {
  const Tensor c = Tensor::full({3}, 1.0, DType::f64);
  const Tensor y = ops::scale(c, 2.0);
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(tape_size(), 0u);

  Tensor p = Tensor::full({3}, 1.0, DType::f64);
  p.set_requires_grad(true);
  const Tensor z = ops::add(ops::scale(p, 2.0), c);
  EXPECT_TRUE(z.requires_grad());
  EXPECT_EQ(tape_size(), 2u);
}

TEST_F(Tape, NoGradScopeRecordsNothing) {
  Tensor p = Tensor::full({3}, 1.0, DType::f64);
  p.set_requires_grad(true);
  {
    NoGradGuard guard;
    EXPECT_FALSE(grad_enabled());
    const Tensor y = ops::scale(p, 2.0);
    EXPECT_FALSE(y.requires_grad());
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_EQ(tape_size(), 0u);
}

TEST_F(Tape, BackwardAccumulatesAcrossCallsAndClearsTheTape) {
  Tensor p = Tensor::from_vector<double>({}, {3.0});
  p.set_requires_grad(true);
  backward(ops::scale(p, 2.0));
  EXPECT_EQ(tape_size(), 0u);
  EXPECT_EQ(p.grad().item(), 2.0);
  backward(ops::scale(p, 5.0));  // a second micro-batch: gradients add up
  EXPECT_EQ(p.grad().item(), 7.0);
  p.zero_grad();
  EXPECT_FALSE(p.grad().defined());
  backward(ops::scale(p, 1.5));
  EXPECT_EQ(p.grad().item(), 1.5);
}

TEST_F(Tape, ATensorUsedTwiceGetsBothContributions) {
  Tensor p = Tensor::from_vector<double>({2}, {1.0, 2.0});
  p.set_requires_grad(true);
  const Tensor h = ops::scale(p, 3.0);
  const Tensor y = ops::add(h, ops::scale(h, 2.0));  // y = 3p + 6p
  backward(y, Tensor::from_vector<double>({2}, {1.0, -1.0}));
  EXPECT_EQ(p.grad().to_vector<double>(), (std::vector<double>{9.0, -9.0}));
}

TEST_F(Tape, SharedGradientStorageIsNeverModifiedInPlace) {
  // Both reshapes pass a view of the same seed back to p: the second contribution must not be
  // added into the first one's storage, which is the caller's seed.
  Tensor p = Tensor::from_vector<double>({2, 2}, {1, 2, 3, 4});
  p.set_requires_grad(true);
  const Tensor y = ops::add(ops::reshape(p, {4}), ops::reshape(p, {4}));
  const Tensor seed = Tensor::from_vector<double>({4}, {1, 2, 3, 4});
  backward(y, seed);
  EXPECT_EQ(seed.to_vector<double>(), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(p.grad().to_vector<double>(), (std::vector<double>{2, 4, 6, 8}));
}

TEST_F(Tape, MissingBackwardRuleFailsNamingTheOp) {
  Tensor p = Tensor::full({2}, 1.0, DType::f64);
  p.set_requires_grad(true);
  const Tensor y = Tensor::full({2}, 2.0, DType::f64);
  ASSERT_TRUE(record("mystery_op", {p}, {y}, nullptr));
  const std::string msg = error_of([&] { backward(y, Tensor::full({2}, 1.0, DType::f64)); });
  EXPECT_NE(msg.find("mystery_op"), std::string::npos) << msg;
  EXPECT_EQ(tape_size(), 0u);  // cleared even when backward fails
}

TEST_F(Tape, NodesTheGradientDoesNotReachAreSkipped) {
  Tensor p = Tensor::full({2}, 1.0, DType::f64);
  p.set_requires_grad(true);
  const Tensor unused = Tensor::full({2}, 0.0, DType::f64);
  record("dead_end", {p}, {unused}, nullptr);  // no rule, but nothing flows into it
  backward(ops::scale(p, 4.0), Tensor::full({2}, 1.0, DType::f64));
  EXPECT_EQ(p.grad().to_vector<double>(), (std::vector<double>{4.0, 4.0}));
}

TEST_F(Tape, BackwardNeedsAScalarOrASeedAndAGraph) {
  Tensor p = Tensor::full({3}, 1.0, DType::f64);
  p.set_requires_grad(true);
  EXPECT_NE(error_of([&] { backward(ops::scale(p, 1.0)); }).find("one element"), std::string::npos);
  clear_tape();
  const Tensor c = Tensor::full({}, 1.0, DType::f64);
  EXPECT_NE(error_of([&] { backward(c); }).find("does not require grad"), std::string::npos);
  EXPECT_NE(error_of([] { Tensor::zeros({2}, DType::i32).set_requires_grad(true); }).find("i32"),
            std::string::npos);
}


// The data-parallel hook: each watched leaf is reported once, right after the last node that
// adds to its gradient, with that final gradient in place; leaves no node uses come last.
TEST_F(Tape, ReportsEachWatchedGradientOnceItIsFinal) {
  auto leaf = [](double v, const char* name) {
    Tensor t = Tensor::from_vector<double>({}, {v});
    t.set_requires_grad(true).set_name(name);
    return t;
  };
  const Tensor a = leaf(2.0, "a"), b = leaf(3.0, "b"), unused = leaf(5.0, "unused");
  // y = (a + b) · 4 + a: a is used twice (first by the add), b once.
  const Tensor y = ops::add(ops::scale(ops::add(a, b), 4.0), a);
  std::vector<std::pair<size_t, double>> seen;  // (index, gradient when reported)
  backward(y, {unused, b, a}, [&](size_t i) {
    const Tensor t = i == 0 ? unused : i == 1 ? b : a;
    seen.emplace_back(i, t.grad().defined() ? t.grad().item() : -1.0);
  });
  // Reverse order: add(·, a) → scale → add(a, b), which is the last use of both a and b.
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0], std::make_pair(size_t(1), 4.0));  // b: after add(a, b), final
  EXPECT_EQ(seen[1], std::make_pair(size_t(2), 5.0));  // a: 1 + 4, final
  EXPECT_EQ(seen[2], std::make_pair(size_t(0), -1.0)); // unused: at the end, no gradient
  EXPECT_EQ(tape_size(), 0u);
}

}  // namespace
}  // namespace remoe::test
