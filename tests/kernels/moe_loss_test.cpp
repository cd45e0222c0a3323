#include "tests/test_util.h"

namespace remoe::test {
namespace {

Tensor f64(const Shape& shape, const std::vector<double>& v) {
  return Tensor::from_vector<double>(shape, v);
}

Tensor counts_tensor(const std::vector<int32_t>& c) {
  return Tensor::from_vector<int32_t>({int64_t(c.size())}, c);
}

Tensor leaf(Tensor t, const char* name) {
  t.set_requires_grad(true).set_name(name);
  return t;
}

bool has(const std::string& msg, const char* part) { return msg.find(part) != std::string::npos; }

// --- the losses on given scores ----------------------------------------------------------------

TEST(MoeLoss, HandComputedValuesAndGradients) {
  // s = [[1, 2, 3], [4, 5, 6]], c = (2, 0, 1), coeff 0.5, k 1, T 2, E 3:
  // load balance = 0.5 · 3 / (1 · 4) · (2 · 5 + 0 · 7 + 1 · 9) = 7.125, gradient per column
  // 0.375 · c_e; L1 = 0.5 / 2 · 21 = 5.25, gradient 0.25. An upstream dloss of 2 doubles both.
  for (DType dtype : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor s = leaf(ops::cast(f64({2, 3}, {1, 2, 3, 4, 5, 6}), dtype), "s");
    const Tensor lb = ops::load_balance_loss(s, counts_tensor({2, 0, 1}), 0.5, 1);
    EXPECT_EQ(lb.shape(), Shape{});
    EXPECT_EQ(lb.dtype(), dtype);
    EXPECT_EQ(lb.item(), 7.125);
    backward(lb, Tensor::full({}, 2.0, dtype));
    EXPECT_TRUE(all_close(values(s.grad()), {1.5, 0, 0.75, 1.5, 0, 0.75}, 0, 0));

    s.zero_grad();
    const Tensor l1 = ops::l1_loss(s, 0.5);
    EXPECT_EQ(l1.shape(), Shape{});
    EXPECT_EQ(l1.item(), 5.25);
    backward(l1, Tensor::full({}, 2.0, dtype));
    EXPECT_TRUE(all_close(values(s.grad()), std::vector<double>(6, 0.5), 0, 0));
  }
}

TEST(MoeLoss, KDividesTheLoadBalanceLoss) {
  const Tensor s = f64({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor c = counts_tensor({2, 0, 1});
  EXPECT_DOUBLE_EQ(ops::load_balance_loss(s, c, 0.5, 3).item(), 7.125 / 3);
}

struct LossCase {
  int64_t T, E;
  int k;
  std::vector<int32_t> counts;  // (E)
};

std::ostream& operator<<(std::ostream& os, const LossCase& c) {
  return os << "T" << c.T << "_E" << c.E << "_k" << c.k;
}

class MoeLossTest : public ::testing::TestWithParam<LossCase> {};

TEST_P(MoeLossTest, ForwardMatchesFormula) {
  const LossCase c = GetParam();
  Rng rng(1);
  const Tensor s = rand_uniform({c.T, c.E}, DType::f64, rng, 0.0, 2.0);
  const auto sv = values(s);
  double weighted = 0, total = 0;
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.E; ++e) {
      weighted += c.counts[size_t(e)] * sv[size_t(t * c.E + e)];
      total += sv[size_t(t * c.E + e)];
    }
  const double lb = 0.3 * double(c.E) / (c.k * double(c.T * c.T)) * weighted;
  EXPECT_NEAR(ops::load_balance_loss(s, counts_tensor(c.counts), 0.3, c.k).item(), lb,
              1e-12 * std::abs(lb));
  EXPECT_NEAR(ops::l1_loss(s, 0.3).item(), 0.3 / double(c.T) * total, 1e-12 * total);
}

TEST_P(MoeLossTest, GradCheck) {
  const LossCase c = GetParam();
  Rng rng(2);
  const Tensor s = param({c.T, c.E}, rng, "scores");
  const Tensor counts = counts_tensor(c.counts);
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) {
        return ops::load_balance_loss(in[0], counts, 0.3, c.k);
      },
      {s});
  expect_gradcheck([](const std::vector<Tensor>& in) { return ops::l1_loss(in[0], 0.3); }, {s});
}

TEST_P(MoeLossTest, Float32AgreesWithFloat64) {
  const LossCase c = GetParam();
  Rng rng(3);
  const Tensor raw = rand_uniform({c.T, c.E}, DType::f64, rng, 0.0, 2.0);
  const Tensor s32 = leaf(ops::cast(raw, DType::f32), "s32");
  const Tensor s64 = leaf(raw, "s64");
  const Tensor counts = counts_tensor(c.counts);
  // Forward then backward per precision: backward() clears the whole tape.
  const Tensor lb64 = ops::load_balance_loss(s64, counts, 0.3, c.k);
  backward(lb64);
  const Tensor lb32 = ops::load_balance_loss(s32, counts, 0.3, c.k);
  backward(lb32);
  EXPECT_TRUE(all_close(lb32, lb64, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(s32.grad(), s64.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(ops::l1_loss(s32, 0.3), ops::l1_loss(s64, 0.3), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeLossTest,
                         ::testing::Values(LossCase{1, 1, 1, {1}},
                                           LossCase{7, 5, 2, {3, 0, 5, 2, 4}},  // an empty expert
                                           LossCase{4, 3, 1, {4, 0, 0}},  // all on one expert
                                           LossCase{6, 8, 2, {1, 2, 0, 3, 1, 2, 2, 1}}),
                         ::testing::PrintToStringParamName());

// --- the regularisers through the routers (REMOE_SPEC §2-3) ------------------------------------

// Logits (T, E) with |z| ≥ 0.05, so no entry sits on the ReLU kink.
Tensor relu_logits(int64_t T, int64_t E, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> v(size_t(T * E));
  for (double& x : v) {
    const double r = rng.normal();
    x = (r >= 0 ? 1 : -1) * (0.05 + std::abs(r));
  }
  return f64({T, E}, v);
}

// The invariant: for R = relu_router(z).gates, ∂aux/∂z = λ·E·c_e/(k·T²) on active
// entries and exactly 0 elsewhere; the value is the formula.
TEST(MoeRegulariser, LoadBalancedL1GradientThroughReluRouter) {
  const int64_t T = 7, E = 5;
  const int k = 2;
  const double lambda = 0.37;
  const Tensor z = leaf(relu_logits(T, E, 4), "z");
  const ops::Routing r = ops::relu_router(z);
  const Tensor aux = ops::load_balance_loss(r.gates, r.expert_counts, lambda, k);

  const auto zv = values(z);
  std::vector<double> c(size_t(E), 0.0), col(size_t(E), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e)
      if (zv[size_t(t * E + e)] > 0) c[size_t(e)] += 1, col[size_t(e)] += zv[size_t(t * E + e)];
  double expected = 0;
  for (int64_t e = 0; e < E; ++e) expected += c[size_t(e)] * col[size_t(e)];
  expected *= lambda * E / (k * double(T * T));
  EXPECT_NEAR(aux.item(), expected, 1e-14 * expected);

  backward(aux);
  const auto g = values(z.grad());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const size_t i = size_t(t * E + e);
      if (zv[i] > 0) {
        const double want = lambda * E * c[size_t(e)] / (k * double(T * T));
        EXPECT_NEAR(g[i], want, 1e-15 * want) << "t " << t << " e " << e;
      } else {
        EXPECT_EQ(g[i], 0.0) << "t " << t << " e " << e;
      }
    }
}

TEST(MoeRegulariser, PlainL1GradientThroughReluRouter) {
  const int64_t T = 7, E = 5;
  const double lambda = 0.37;
  const Tensor z = leaf(relu_logits(T, E, 5), "z");
  const Tensor aux = ops::l1_loss(ops::relu_router(z).gates, lambda);
  const auto zv = values(z);
  double sum = 0;
  for (double x : zv) sum += x > 0 ? x : 0;
  EXPECT_NEAR(aux.item(), lambda / T * sum, 1e-14 * sum);
  backward(aux);
  const auto g = values(z.grad());
  for (size_t i = 0; i < zv.size(); ++i) {
    if (zv[i] > 0)
      EXPECT_NEAR(g[i], lambda / T, 1e-16) << i;
    else
      EXPECT_EQ(g[i], 0.0) << i;
  }
}

TEST(MoeRegulariser, TopkAuxLossOnProbs) {
  const int64_t T = 7, E = 5;
  const int k = 2;
  Rng rng(6);
  const Tensor z = randn({T, E}, DType::f64, rng);
  const ops::Routing r = ops::topk_router(z, k);
  const Tensor aux = ops::load_balance_loss(r.probs, r.expert_counts, 0.01, k);
  const auto p = values(r.probs);
  const auto m = r.mask.to_vector<int32_t>();
  std::vector<double> c(size_t(E), 0.0), col(size_t(E), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e)
      c[size_t(e)] += m[size_t(t * E + e)], col[size_t(e)] += p[size_t(t * E + e)];
  double expected = 0;
  for (int64_t e = 0; e < E; ++e) expected += c[size_t(e)] * col[size_t(e)];
  expected *= 0.01 * E / (k * double(T * T));
  EXPECT_NEAR(aux.item(), expected, 1e-14 * expected);
  // score_sums is Σ_t p, what the aux loss reads.
  EXPECT_TRUE(all_close(values(r.score_sums), col, 1e-14, 1e-14));
}

struct CompositionCase {
  int64_t T, E;
  int k;
};

std::ostream& operator<<(std::ostream& os, const CompositionCase& c) {
  return os << "T" << c.T << "_E" << c.E << "_k" << c.k;
}

class MoeRegulariserTest : public ::testing::TestWithParam<CompositionCase> {};

TEST_P(MoeRegulariserTest, GradCheckLoadBalanceThroughReluRouter) {
  const auto [T, E, k] = GetParam();
  const Tensor z = leaf(relu_logits(T, E, 7), "z");
  if (T == 1 && E == 1) z.data<double>()[0] = 0.8;  // one active pair, else the check is vacuous
  expect_gradcheck(
      [k = k](const std::vector<Tensor>& in) {
        const ops::Routing r = ops::relu_router(in[0]);
        return ops::load_balance_loss(r.gates, r.expert_counts, 0.3, k);
      },
      {z});
  expect_gradcheck(
      [](const std::vector<Tensor>& in) {
        return ops::l1_loss(ops::relu_router(in[0]).gates, 0.3);
      },
      {z});
}

TEST_P(MoeRegulariserTest, GradCheckAuxLossThroughTopkRouter) {
  const auto [T, E, k] = GetParam();
  if (E == 1) {
    // Softmax over one expert is the constant 1: aux = 0.01 · c_0 · T / (k · T²), no gradient.
    const Tensor z = leaf(f64({T, E}, std::vector<double>(size_t(T), 0.4)), "z");
    const ops::Routing r = ops::topk_router(z, k);
    const Tensor aux = ops::load_balance_loss(r.probs, r.expert_counts, 0.01, k);
    EXPECT_DOUBLE_EQ(aux.item(), 0.01 / k);
    backward(aux);
    EXPECT_TRUE(all_close(values(z.grad()), std::vector<double>(size_t(T), 0.0), 0, 0));
    return;
  }
  // Rank-spaced logits keep the top-k selection away from ties.
  Rng rng(8);
  std::vector<double> v(size_t(T * E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e)
      v[size_t(t * E + e)] = 0.5 * double((e + 3 * t) % E) + 0.1 * rng.uniform() - 0.05;
  const Tensor z = leaf(f64({T, E}, v), "z");
  expect_gradcheck(
      [k = k](const std::vector<Tensor>& in) {
        const ops::Routing r = ops::topk_router(in[0], k);
        return ops::load_balance_loss(r.probs, r.expert_counts, 0.01, k);
      },
      {z});
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeRegulariserTest,
                         ::testing::Values(CompositionCase{1, 1, 1}, CompositionCase{7, 5, 2},
                                           CompositionCase{3, 6, 1}, CompositionCase{10, 4, 2}),
                         ::testing::PrintToStringParamName());

// --- errors ------------------------------------------------------------------------------------

TEST(MoeLoss, BadArgumentsAreErrors) {
  const Tensor s = Tensor::zeros({4, 3}, DType::f32);
  const Tensor c = counts_tensor({1, 2, 1});
  std::string msg = error_of([&] { ops::load_balance_loss(s, counts_tensor({1, 2}), 0.1, 1); });
  EXPECT_TRUE(has(msg, "load_balance_loss") && has(msg, "expert_counts (2)") && has(msg, "E = 3") &&
              has(msg, "(4, 3)"))
      << msg;
  msg = error_of([&] { ops::load_balance_loss(s, c, 0.1, 0); });
  EXPECT_TRUE(has(msg, "load_balance_loss") && has(msg, "k = 0")) << msg;
  msg = error_of([&] { ops::load_balance_loss(s, Tensor::zeros({3}, DType::f32), 0.1, 1); });
  EXPECT_TRUE(has(msg, "expert_counts") && has(msg, "must be i32")) << msg;
  msg = error_of([&] { ops::load_balance_loss(s, Tensor::zeros({1, 3}, DType::i32), 0.1, 1); });
  EXPECT_TRUE(has(msg, "expert_counts") && has(msg, "must be 1-D")) << msg;
  msg = error_of([&] { ops::load_balance_loss(Tensor::zeros({12}, DType::f32), c, 0.1, 1); });
  EXPECT_TRUE(has(msg, "load_balance_loss") && has(msg, "scores") && has(msg, "must be 2-D"))
      << msg;
  msg = error_of([&] { ops::load_balance_loss(Tensor::zeros({4, 3}, DType::i32), c, 0.1, 1); });
  EXPECT_TRUE(has(msg, "scores") && has(msg, "f32 or f64") && has(msg, "i32")) << msg;
  msg = error_of([&] { ops::l1_loss(Tensor::zeros({2, 2, 3}, DType::f64), 0.1); });
  EXPECT_TRUE(has(msg, "l1_loss") && has(msg, "must be 2-D") && has(msg, "(2, 2, 3)")) << msg;
  msg = error_of([&] { ops::l1_loss(Tensor::zeros({4, 3}, DType::i32), 0.1); });
  EXPECT_TRUE(has(msg, "l1_loss") && has(msg, "f32 or f64")) << msg;
}

TEST(MoeLoss, NoTokensGiveZeroLoss) {
  const Tensor s = Tensor::zeros({0, 3}, DType::f64);
  EXPECT_EQ(ops::load_balance_loss(s, counts_tensor({0, 0, 0}), 0.1, 1).item(), 0.0);
  EXPECT_EQ(ops::l1_loss(s, 0.1).item(), 0.0);
}

}  // namespace
}  // namespace remoe::test
