// Capacity with token dropping (kernels/capacity.h): the capacity formula, both drop policies
// on a hand-worked case (ties included), a fully dropped token, the gradient through the kept
// gates, errors.
#include "tests/test_util.h"

namespace remoe::test {
namespace {

std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }

TEST(ExpertCapacity, CeilOfTokensTimesKOverETimesFactor) {
  EXPECT_EQ(ops::expert_capacity(8, 1, 4, 1.0), 2);
  EXPECT_EQ(ops::expert_capacity(8, 1, 4, 1.25), 3);   // ceil(2.5)
  EXPECT_EQ(ops::expert_capacity(10, 2, 4, 1.0), 5);
  EXPECT_EQ(ops::expert_capacity(3, 1, 8, 1.0), 1);    // ceil(0.375)
  EXPECT_EQ(ops::expert_capacity(4, 2, 2, 4.0), 4);    // at most T
  EXPECT_EQ(ops::expert_capacity(30, 1, 1, 0.1), 3);   // 30 · 0.1 = 3.0000000000000004 in double
  EXPECT_EQ(ops::expert_capacity(0, 1, 4, 1.0), 0);
  EXPECT_NE(error_of([] { ops::expert_capacity(8, 1, 4, 0.0); }).find("factor = 0"),
            std::string::npos);
}

// Expert 0 is asked for by all four tokens, expert 1 by token 3 only.
//   scores column 0: 0.1, 0.4, 0.3, 0.4 (tokens 1 and 3 tie)
struct Hand {
  Tensor scores = Tensor::from_vector<double>({4, 2}, {0.1, 0.9, 0.4, 0.6, 0.3, 0.7, 0.4, 0.6});
  Tensor mask = Tensor::from_vector<int32_t>({4, 2}, {1, 0, 1, 0, 1, 0, 1, 1});
  ops::Routing routing() const {
    ops::Routing r;
    r.mask = mask;
    r.probs = scores;
    const auto s = scores.to_vector<double>();
    const auto m = mask.to_vector<int32_t>();
    std::vector<double> g(8);
    for (size_t i = 0; i < 8; ++i) g[i] = m[i] ? s[i] : 0.0;
    r.gates = Tensor::from_vector<double>({4, 2}, g);
    r.nonzero = Tensor::from_vector<int32_t>({}, {5});
    r.score_sums = Tensor::from_vector<double>({2}, {1.2, 2.8});
    return r;
  }
};

TEST(DropOverCapacity, ByProbabilityKeepsTheLargestWithTiesInTokenOrder) {
  const Hand h;
  ops::Routing r = ops::drop_over_capacity(h.routing(), h.scores, 2, false);
  EXPECT_EQ(ints(r.mask), (std::vector<int32_t>{0, 0, 1, 0, 0, 0, 1, 1}));
  EXPECT_TRUE(all_close(values(r.gates), {0, 0, 0.4, 0, 0, 0, 0.4, 0.6}, 0, 0));
  EXPECT_EQ(ints(r.expert_counts), (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(ints(r.token_counts), (std::vector<int32_t>{0, 1, 0, 1 + 1}));
  EXPECT_EQ(r.nonzero.item(), 3.0);
  // probs and score_sums are the routing's before dropping (the aux loss's view).
  EXPECT_TRUE(all_close(r.score_sums, h.routing().score_sums, 0, 0));
  // Capacity 1: of the tied 0.4s the lower token index wins.
  r = ops::drop_over_capacity(h.routing(), h.scores, 1, false);
  EXPECT_EQ(ints(r.mask), (std::vector<int32_t>{0, 0, 1, 0, 0, 0, 0, 1}));
}

TEST(DropOverCapacity, ByPositionKeepsTheFirstTokens) {
  const Hand h;
  const ops::Routing r = ops::drop_over_capacity(h.routing(), h.scores, 2, true);
  EXPECT_EQ(ints(r.mask), (std::vector<int32_t>{1, 0, 1, 0, 0, 0, 0, 1}));
  EXPECT_TRUE(all_close(values(r.gates), {0.1, 0, 0.4, 0, 0, 0, 0, 0.6}, 0, 0));
  EXPECT_EQ(ints(r.expert_counts), (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(ints(r.token_counts), (std::vector<int32_t>{1, 1, 0, 1}));
}

TEST(DropOverCapacity, UnderCapacityKeepsEverythingAndZeroDropsEverything) {
  const Hand h;
  ops::Routing r = ops::drop_over_capacity(h.routing(), h.scores, 4, false);
  EXPECT_EQ(ints(r.mask), ints(h.mask));
  EXPECT_TRUE(all_close(r.gates, h.routing().gates, 0, 0));
  r = ops::drop_over_capacity(h.routing(), h.scores, 0, true);
  EXPECT_EQ(ints(r.mask), std::vector<int32_t>(8, 0));
  EXPECT_EQ(r.nonzero.item(), 0.0);
}

TEST(DropOverCapacity, GradientReachesOnlyKeptGates) {
  const Hand h;
  ops::Routing in = h.routing();
  in.gates.set_requires_grad(true).set_name("gates");
  const ops::Routing r = ops::drop_over_capacity(in, h.scores, 2, false);
  backward(r.gates, Tensor::from_vector<double>({4, 2}, {1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_TRUE(all_close(values(in.gates.grad()), {0, 0, 3, 0, 0, 0, 7, 8}, 0, 0));
}

TEST(DropOverCapacity, GradCheckThroughTopk) {
  // Random logits with well-separated probabilities: no selection flips under the step.
  Rng rng(7);
  const Tensor z = param({9, 4}, rng, "z", 2.0);
  for (bool by_position : {false, true}) {
    SCOPED_TRACE(by_position ? "position" : "probs");
    expect_gradcheck(
        [=](const std::vector<Tensor>& in) {
          const ops::Routing r = ops::topk_router(in[0], 2);
          return ops::drop_over_capacity(r, r.probs, 3, by_position).gates;
        },
        {z});
  }
}

TEST(DropOverCapacity, Errors) {
  const Hand h;
  std::string msg = error_of([&] { ops::drop_over_capacity(h.routing(), h.scores, -1, false); });
  EXPECT_NE(msg.find("capacity must be >= 0, got -1"), std::string::npos) << msg;
  msg = error_of([&] {
    ops::drop_over_capacity(h.routing(), Tensor::zeros({3, 2}, DType::f64), 1, false);
  });
  EXPECT_NE(msg.find("drop_over_capacity"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 2)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
