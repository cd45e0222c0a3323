#include <algorithm>
#include <numeric>

#include "tests/test_util.h"

namespace remoe::test {
namespace {

std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }

Tensor f64(const Shape& shape, const std::vector<double>& v) {
  return Tensor::from_vector<double>(shape, v);
}

Tensor leaf(Tensor t, const char* name) {
  t.set_requires_grad(true).set_name(name);
  return t;
}

// Independent softmax of one row, for expected values.
std::vector<double> softmax_row(const std::vector<double>& z) {
  const double m = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) s += p[i] = std::exp(z[i] - m);
  for (double& x : p) x /= s;
  return p;
}

// --- ReLU routing ----------------------------------------------------------------------------

// Row 1 has no active expert; z = 0 (rows 0 and 1) is inactive; expert 2 gets no token.
const std::vector<double> kReluLogits = {1.5, -0.5, 0.0, 2.0,     //
                                         -1.0, -2.0, 0.0, -0.25,  //
                                         0.5, 3.0, -0.1, 0.25};

TEST(ReluRouter, HandComputedGatesAndStatistics) {
  for (DType dtype : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor z = ops::cast(f64({3, 4}, kReluLogits), dtype);
    const ops::Routing r = ops::relu_router(z);
    EXPECT_EQ(r.gates.shape(), (Shape{3, 4}));
    EXPECT_EQ(r.gates.dtype(), dtype);
    EXPECT_TRUE(all_close(values(r.gates), {1.5, 0, 0, 2, 0, 0, 0, 0, 0.5, 3, 0, 0.25}, 0, 0));
    EXPECT_EQ(r.mask.shape(), (Shape{3, 4}));
    EXPECT_EQ(ints(r.mask), (std::vector<int32_t>{1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1}));
    EXPECT_EQ(r.expert_counts.shape(), (Shape{4}));
    EXPECT_EQ(ints(r.expert_counts), (std::vector<int32_t>{2, 1, 0, 2}));
    EXPECT_EQ(r.score_sums.shape(), (Shape{4}));
    EXPECT_EQ(r.score_sums.dtype(), dtype);
    EXPECT_TRUE(all_close(values(r.score_sums), {2.0, 3.0, 0.0, 2.25}, 0, 0));
    EXPECT_EQ(r.token_counts.shape(), (Shape{3}));
    EXPECT_EQ(ints(r.token_counts), (std::vector<int32_t>{2, 0, 3}));
    EXPECT_EQ(r.nonzero.shape(), Shape{});
    EXPECT_EQ(r.nonzero.dtype(), DType::i32);
    EXPECT_EQ(r.nonzero.item(), 5.0);
    EXPECT_FALSE(r.probs.defined());
    EXPECT_DOUBLE_EQ(ops::sparsity(r), 7.0 / 12.0);
  }
}

TEST(ReluRouter, BackwardPassesGradientOnlyWherePositive) {
  const Tensor z = leaf(f64({3, 4}, kReluLogits), "z");
  const ops::Routing r = ops::relu_router(z);
  std::vector<double> seed(12);
  std::iota(seed.begin(), seed.end(), 1.0);
  backward(r.gates, f64({3, 4}, seed));
  EXPECT_TRUE(all_close(values(z.grad()), {1, 0, 0, 4, 0, 0, 0, 0, 9, 10, 0, 12}, 0, 0));
}

TEST(ReluRouter, NoTapeNodeWithoutGrad) {
  clear_tape();
  ops::relu_router(f64({3, 4}, kReluLogits));
  EXPECT_EQ(tape_size(), 0u);
}

struct RouterCase {
  int64_t T, E;
  int k;  // TopK only
  enum Mode { kRandom, kEmptyExpert, kOneExpert } mode;
};

std::ostream& operator<<(std::ostream& os, const RouterCase& c) {
  static const char* const names[] = {"random", "empty_expert", "one_expert"};
  return os << "T" << c.T << "_E" << c.E << "_k" << c.k << "_" << names[c.mode];
}

// ReLU logits with |z| ≥ 0.05 (clear of the kink); kEmptyExpert makes expert E−1 negative for
// every token, kOneExpert makes expert 0 the only positive one.
Tensor relu_logits(const RouterCase& c, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> v(size_t(c.T * c.E));
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.E; ++e) {
      const double r = rng.normal();
      double mag = 0.05 + std::abs(r);
      double sign = r >= 0 ? 1 : -1;
      if (c.mode == RouterCase::kEmptyExpert && e == c.E - 1) sign = -1;
      if (c.mode == RouterCase::kOneExpert) sign = e == 0 ? 1 : -1;
      v[size_t(t * c.E + e)] = sign * mag;
    }
  return f64({c.T, c.E}, v);
}

class ReluRouterTest : public ::testing::TestWithParam<RouterCase> {};

TEST_P(ReluRouterTest, ForwardMatchesDirectLoops) {
  const RouterCase c = GetParam();
  const Tensor z = relu_logits(c, 11);
  const ops::Routing r = ops::relu_router(z);
  const auto zv = values(z);
  std::vector<double> gates(zv.size()), sums(size_t(c.E), 0.0);
  std::vector<int32_t> mask(zv.size()), counts(size_t(c.E), 0), per_token(size_t(c.T), 0);
  int32_t nonzero = 0;
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.E; ++e) {
      const size_t i = size_t(t * c.E + e);
      gates[i] = zv[i] > 0 ? zv[i] : 0;
      mask[i] = zv[i] > 0;
      counts[size_t(e)] += mask[i];
      sums[size_t(e)] += gates[i];
      per_token[size_t(t)] += mask[i];
      nonzero += mask[i];
    }
  EXPECT_TRUE(all_close(values(r.gates), gates, 0, 0));
  EXPECT_EQ(ints(r.mask), mask);
  EXPECT_EQ(ints(r.expert_counts), counts);
  EXPECT_TRUE(all_close(values(r.score_sums), sums, 1e-12, 1e-12));
  EXPECT_EQ(ints(r.token_counts), per_token);
  EXPECT_EQ(r.nonzero.item(), nonzero);
  EXPECT_DOUBLE_EQ(ops::sparsity(r), 1.0 - double(nonzero) / double(c.T * c.E));
  if (c.mode == RouterCase::kEmptyExpert) {
    EXPECT_EQ(counts.back(), 0);
  }
  if (c.mode == RouterCase::kOneExpert) {
    EXPECT_EQ(counts[0], c.T);
  }
}

TEST_P(ReluRouterTest, GradCheck) {
  const RouterCase c = GetParam();
  const Tensor z = leaf(relu_logits(c, 12), "z");
  expect_gradcheck([](const std::vector<Tensor>& in) { return ops::relu_router(in[0]).gates; },
                   {z});
}

TEST_P(ReluRouterTest, Float32AgreesWithFloat64) {
  const RouterCase c = GetParam();
  const Tensor raw = relu_logits(c, 13);
  const Tensor z32 = leaf(ops::cast(raw, DType::f32), "z32");
  const Tensor z64 = leaf(raw, "z64");
  Rng rng(14);
  const Tensor seed = randn({c.T, c.E}, DType::f64, rng);
  // backward() clears the whole tape, so each precision runs forward and backward in turn.
  const ops::Routing r64 = ops::relu_router(z64);
  backward(r64.gates, seed);
  const ops::Routing r32 = ops::relu_router(z32);
  backward(r32.gates, ops::cast(seed, DType::f32));
  EXPECT_TRUE(all_close(r32.gates, r64.gates, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(r32.score_sums, r64.score_sums, 1e-5, 1e-4));
  EXPECT_EQ(ints(r32.mask), ints(r64.mask));
  EXPECT_EQ(ints(r32.expert_counts), ints(r64.expert_counts));
  EXPECT_TRUE(all_close(z32.grad(), z64.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, ReluRouterTest,
                         ::testing::Values(RouterCase{1, 1, 1, RouterCase::kRandom},
                                           RouterCase{1, 1, 1, RouterCase::kOneExpert},
                                           RouterCase{7, 5, 2, RouterCase::kRandom},
                                           RouterCase{6, 4, 1, RouterCase::kEmptyExpert},
                                           RouterCase{5, 3, 1, RouterCase::kOneExpert},
                                           RouterCase{13, 8, 2, RouterCase::kRandom}),
                         ::testing::PrintToStringParamName());

// --- softmax top-k routing -------------------------------------------------------------------

TEST(TopkRouter, HandComputedGatesAndStatistics) {
  // Row 0: distinct; row 1: a tie between experts 1 and 2 for first place; row 2: all equal.
  const std::vector<double> zv = {1.0, 3.0, 2.0, 0.0,  //
                                  1.0, 2.0, 2.0, 0.5,  //
                                  0.0, 0.0, 0.0, 0.0};
  for (DType dtype : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    const double tol = dtype == DType::f64 ? 1e-15 : 1e-7;
    for (int k : {1, 2}) {
      SCOPED_TRACE(k);
      const ops::Routing r = ops::topk_router(ops::cast(f64({3, 4}, zv), dtype), k);
      std::vector<double> probs, gates;
      for (int t = 0; t < 3; ++t) {
        const auto p = softmax_row({zv.begin() + 4 * t, zv.begin() + 4 * t + 4});
        probs.insert(probs.end(), p.begin(), p.end());
      }
      // Selections worked out by hand: ties go to the lower expert index.
      const std::vector<int32_t> mask =
          k == 1 ? std::vector<int32_t>{0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0}
                 : std::vector<int32_t>{0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0};
      std::vector<double> sums(4, 0.0);
      for (size_t i = 0; i < 12; ++i) {
        gates.push_back(mask[i] ? probs[i] : 0.0);
        sums[i % 4] += probs[i];
      }
      EXPECT_EQ(ints(r.mask), mask);
      EXPECT_TRUE(all_close(values(r.probs), probs, tol, tol));
      EXPECT_TRUE(all_close(values(r.gates), gates, tol, tol));
      EXPECT_EQ(ints(r.expert_counts), k == 1 ? (std::vector<int32_t>{1, 2, 0, 0})
                                              : (std::vector<int32_t>{1, 3, 2, 0}));
      EXPECT_TRUE(all_close(values(r.score_sums), sums, tol, tol));
      EXPECT_EQ(ints(r.token_counts), (std::vector<int32_t>(3, k)));
      EXPECT_EQ(r.nonzero.item(), 3 * k);
      EXPECT_DOUBLE_EQ(ops::sparsity(r), 1.0 - k / 4.0);
    }
  }
}

TEST(TopkRouter, KEqualsESelectsAll) {
  Rng rng(20);
  const Tensor z = randn({5, 3}, DType::f64, rng);
  const ops::Routing r = ops::topk_router(z, 3);
  EXPECT_EQ(ints(r.mask), std::vector<int32_t>(15, 1));
  EXPECT_TRUE(all_close(r.gates, r.probs, 0, 0));
  EXPECT_EQ(ints(r.expert_counts), (std::vector<int32_t>{5, 5, 5}));
  EXPECT_EQ(r.nonzero.item(), 15.0);
  EXPECT_EQ(ops::sparsity(r), 0.0);
  // Every probability row sums to one, so the score sums add up to T.
  const auto sums = values(r.score_sums);
  EXPECT_NEAR(sums[0] + sums[1] + sums[2], 5.0, 1e-12);
}

TEST(TopkRouter, RenormalisedGatesSumToOnePerToken) {
  Rng rng(21);
  const Tensor z = randn({6, 5}, DType::f64, rng, 2.0);
  const ops::Routing plain = ops::topk_router(z, 2);
  const ops::Routing renorm = ops::topk_router(z, 2, true);
  EXPECT_EQ(ints(renorm.mask), ints(plain.mask));
  EXPECT_TRUE(all_close(renorm.probs, plain.probs, 0, 0));
  const auto g = values(renorm.gates), gp = values(plain.gates);
  for (int t = 0; t < 6; ++t) {
    double s = 0, sp = 0;
    for (int e = 0; e < 5; ++e) s += g[size_t(t * 5 + e)], sp += gp[size_t(t * 5 + e)];
    EXPECT_NEAR(s, 1.0, 1e-14) << "token " << t;
    for (int e = 0; e < 5; ++e)
      EXPECT_NEAR(g[size_t(t * 5 + e)], gp[size_t(t * 5 + e)] / sp, 1e-15);
  }
}

TEST(TopkRouter, LargeLogitsStayFinite) {
  // A naive exp would overflow; the max-shifted softmax gives (1, 0).
  const ops::Routing r = ops::topk_router(ops::cast(f64({1, 2}, {1000.0, 0.0}), DType::f32), 1);
  EXPECT_TRUE(all_close(values(r.probs), {1.0, 0.0}, 0, 0));
  EXPECT_EQ(ints(r.mask), (std::vector<int32_t>{1, 0}));
}

TEST(TopkRouter, SingleExpertHasGateOneAndZeroGradient) {
  const Tensor z = leaf(f64({3, 1}, {0.3, -2.0, 5.0}), "z");
  const ops::Routing r = ops::topk_router(z, 1);
  EXPECT_TRUE(all_close(values(r.gates), {1, 1, 1}, 0, 0));
  EXPECT_TRUE(all_close(values(r.probs), {1, 1, 1}, 0, 0));
  EXPECT_EQ(ints(r.expert_counts), (std::vector<int32_t>{3}));
  backward(ops::add(r.gates, ops::scale(r.probs, 0.7)), f64({3, 1}, {1.0, 2.0, 3.0}));
  EXPECT_TRUE(all_close(values(z.grad()), {0, 0, 0}, 0, 0));
}

// TopK logits: each row is a random permutation of ranks spaced 0.5 apart plus noise in
// ±0.05, so neighbouring probabilities differ by a factor ≥ e^0.4 and no selection flips under
// a finite-difference step. kEmptyExpert ranks expert E−1 last in every row (never chosen for
// k < E); kOneExpert ranks expert 0 first in every row.
Tensor topk_logits(const RouterCase& c, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> v(size_t(c.T * c.E));
  std::vector<int64_t> rank(size_t(c.E));
  for (int64_t t = 0; t < c.T; ++t) {
    std::iota(rank.begin(), rank.end(), int64_t(0));
    for (int64_t i = c.E - 1; i > 0; --i)
      std::swap(rank[size_t(i)], rank[size_t(rng.below(i + 1))]);
    const auto pin = [&](int64_t expert, int64_t wanted) {
      std::swap(rank[size_t(expert)], *std::find(rank.begin(), rank.end(), wanted));
    };
    if (c.mode == RouterCase::kEmptyExpert) pin(c.E - 1, 0);
    if (c.mode == RouterCase::kOneExpert) pin(0, c.E - 1);
    for (int64_t e = 0; e < c.E; ++e)
      v[size_t(t * c.E + e)] = 0.5 * double(rank[size_t(e)]) - 1.0 + rng.uniform() * 0.1 - 0.05;
  }
  return f64({c.T, c.E}, v);
}

struct TopkCase {
  RouterCase shape;
  bool renormalize;
};

std::ostream& operator<<(std::ostream& os, const TopkCase& c) {
  return os << c.shape << (c.renormalize ? "_renorm" : "");
}

class TopkRouterTest : public ::testing::TestWithParam<TopkCase> {};

TEST_P(TopkRouterTest, ForwardMatchesDirectComputation) {
  const auto [c, renormalize] = GetParam();
  const Tensor z = topk_logits(c, 31);
  const ops::Routing r = ops::topk_router(z, c.k, renormalize);
  const auto zv = values(z);
  std::vector<double> probs, gates, sums(size_t(c.E), 0.0);
  std::vector<int32_t> mask, counts(size_t(c.E), 0);
  for (int64_t t = 0; t < c.T; ++t) {
    const auto p = softmax_row({zv.begin() + t * c.E, zv.begin() + (t + 1) * c.E});
    // Selected: fewer than k experts have a larger probability.
    double selected = 0;
    for (int64_t e = 0; e < c.E; ++e) {
      const auto larger =
          std::count_if(p.begin(), p.end(), [&](double q) { return q > p[size_t(e)]; });
      mask.push_back(larger < c.k);
      if (mask.back()) selected += p[size_t(e)];
      counts[size_t(e)] += mask.back();
      sums[size_t(e)] += p[size_t(e)];
    }
    for (int64_t e = 0; e < c.E; ++e) {
      const bool on = mask[size_t(t * c.E + e)];
      probs.push_back(p[size_t(e)]);
      gates.push_back(on ? (renormalize ? p[size_t(e)] / selected : p[size_t(e)]) : 0.0);
    }
  }
  EXPECT_EQ(ints(r.mask), mask);
  EXPECT_TRUE(all_close(values(r.probs), probs, 1e-14, 1e-14));
  EXPECT_TRUE(all_close(values(r.gates), gates, 1e-14, 1e-14));
  EXPECT_EQ(ints(r.expert_counts), counts);
  EXPECT_TRUE(all_close(values(r.score_sums), sums, 1e-12, 1e-12));
  EXPECT_EQ(ints(r.token_counts), std::vector<int32_t>(size_t(c.T), c.k));
  EXPECT_EQ(r.nonzero.item(), double(c.T * c.k));
  if (c.mode == RouterCase::kEmptyExpert) {
    EXPECT_EQ(counts.back(), 0);
  }
  if (c.mode == RouterCase::kOneExpert) {
    EXPECT_EQ(counts[0], c.T);
  }
}

TEST_P(TopkRouterTest, GradCheckGatesProbsAndBoth) {
  const auto [c, renormalize] = GetParam();
  const Tensor z = leaf(topk_logits(c, 32), "z");
  const int k = c.k;
  const bool rn = renormalize;
  if (rn && k == 1) {
    // Each token's single renormalised gate is 1 whatever z is: the gradient is exactly 0.
    const ops::Routing r = ops::topk_router(z, k, rn);
    EXPECT_TRUE(all_close(values(r.gates), values(r.mask), 0, 0));
    Rng rng(35);
    backward(r.gates, randn({c.T, c.E}, DType::f64, rng));
    EXPECT_TRUE(all_close(values(z.grad()), std::vector<double>(size_t(c.T * c.E), 0.0), 0, 0));
    z.zero_grad();
  } else {
    SCOPED_TRACE("gates only (probs get no gradient)");
    expect_gradcheck(
        [=](const std::vector<Tensor>& in) { return ops::topk_router(in[0], k, rn).gates; }, {z});
  }
  {
    SCOPED_TRACE("probs only (gates get no gradient)");
    expect_gradcheck(
        [=](const std::vector<Tensor>& in) { return ops::topk_router(in[0], k, rn).probs; }, {z});
  }
  {
    SCOPED_TRACE("gates + 0.7 probs");
    expect_gradcheck(
        [=](const std::vector<Tensor>& in) {
          const ops::Routing r = ops::topk_router(in[0], k, rn);
          return ops::add(r.gates, ops::scale(r.probs, 0.7));
        },
        {z});
  }
}

TEST_P(TopkRouterTest, Float32AgreesWithFloat64) {
  const auto [c, renormalize] = GetParam();
  const Tensor raw = topk_logits(c, 33);
  const Tensor z32 = leaf(ops::cast(raw, DType::f32), "z32");
  const Tensor z64 = leaf(raw, "z64");
  // Forward then backward per precision: backward() clears the whole tape.
  const auto route = [&](const Tensor& z) {
    const ops::Routing r = ops::topk_router(z, c.k, renormalize);
    Rng rng(34);
    const Tensor w = ops::cast(randn({c.T, c.E}, DType::f64, rng), z.dtype());
    backward(ops::add(r.gates, ops::scale(r.probs, 0.7)), w);
    return r;
  };
  const ops::Routing r64 = route(z64);
  const ops::Routing r32 = route(z32);
  EXPECT_EQ(ints(r32.mask), ints(r64.mask));
  EXPECT_TRUE(all_close(r32.gates, r64.gates, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(r32.probs, r64.probs, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(r32.score_sums, r64.score_sums, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(z32.grad(), z64.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TopkRouterTest,
    ::testing::Values(TopkCase{{1, 5, 1, RouterCase::kRandom}, false},
                      TopkCase{{1, 5, 2, RouterCase::kRandom}, true},
                      TopkCase{{7, 5, 2, RouterCase::kRandom}, false},
                      TopkCase{{7, 5, 2, RouterCase::kRandom}, true},
                      TopkCase{{6, 4, 1, RouterCase::kEmptyExpert}, false},
                      TopkCase{{6, 4, 3, RouterCase::kEmptyExpert}, true},
                      TopkCase{{5, 3, 1, RouterCase::kOneExpert}, false},
                      TopkCase{{5, 3, 1, RouterCase::kOneExpert}, true},
                      TopkCase{{4, 3, 3, RouterCase::kRandom}, false},
                      TopkCase{{9, 8, 2, RouterCase::kRandom}, true}),
    ::testing::PrintToStringParamName());

// --- many tokens: the OpenMP path ---------------------------------------------------------

// 9000 × 8 pairs is over the kernels' parallel threshold; rows routed one at a time (serially)
// must give the same rows, and the statistics must be the column sums of the mask.
TEST(Router, ManyTokensMatchRowByRowRouting) {
  const int64_t T = 9000, E = 8;
  Rng rng(40);
  const Tensor z = randn({T, E}, DType::f64, rng);
  for (bool topk : {false, true}) {
    SCOPED_TRACE(topk ? "topk" : "relu");
    const auto route = [&](const Tensor& x) {
      return topk ? ops::topk_router(x, 2, true) : ops::relu_router(x);
    };
    const ops::Routing r = route(z);
    const auto g = values(r.gates);
    const auto m = ints(r.mask);
    for (int64_t t : {int64_t(0), int64_t(4321), T - 1}) {
      const auto zv = values(z);
      const Tensor row = f64({1, E}, {zv.begin() + t * E, zv.begin() + (t + 1) * E});
      const ops::Routing one = route(row);
      EXPECT_TRUE(all_close(values(one.gates), {g.begin() + t * E, g.begin() + (t + 1) * E}, 0, 0));
    }
    std::vector<int32_t> counts(size_t(E), 0);
    int64_t nonzero = 0;
    for (size_t i = 0; i < m.size(); ++i) counts[i % size_t(E)] += m[i], nonzero += m[i];
    EXPECT_EQ(ints(r.expert_counts), counts);
    EXPECT_EQ(r.nonzero.item(), double(nonzero));
  }
}

// --- errors ----------------------------------------------------------------------------------

bool has(const std::string& msg, const char* part) { return msg.find(part) != std::string::npos; }

TEST(Router, KOutOfRangeNamesKAndE) {
  const Tensor z = Tensor::zeros({3, 4}, DType::f32);
  std::string msg = error_of([&] { ops::topk_router(z, 5); });
  EXPECT_TRUE(has(msg, "topk_router") && has(msg, "k = 5") && has(msg, "E = 4")) << msg;
  msg = error_of([&] { ops::topk_router(z, 0); });
  EXPECT_TRUE(has(msg, "topk_router") && has(msg, "k = 0") && has(msg, "E = 4")) << msg;
}

TEST(Router, WrongRankOrDtypeIsAnError) {
  const Tensor v = Tensor::zeros({4}, DType::f32);
  const Tensor i = Tensor::zeros({3, 4}, DType::i32);
  std::string msg = error_of([&] { ops::relu_router(v); });
  EXPECT_TRUE(has(msg, "relu_router") && has(msg, "logits") && has(msg, "must be 2-D") &&
              has(msg, "(4)"))
      << msg;
  msg = error_of([&] { ops::topk_router(Tensor::zeros({2, 3, 4}, DType::f32), 1); });
  EXPECT_TRUE(has(msg, "topk_router") && has(msg, "must be 2-D") && has(msg, "(2, 3, 4)")) << msg;
  msg = error_of([&] { ops::relu_router(i); });
  EXPECT_TRUE(has(msg, "relu_router") && has(msg, "f32 or f64") && has(msg, "i32")) << msg;
  msg = error_of([&] { ops::topk_router(i, 1); });
  EXPECT_TRUE(has(msg, "topk_router") && has(msg, "f32 or f64") && has(msg, "(3, 4) i32")) << msg;
  msg = error_of([&] { ops::relu_router(Tensor()); });
  EXPECT_TRUE(has(msg, "relu_router") && has(msg, "undefined")) << msg;
  msg = error_of([&] { ops::relu_router(Tensor::zeros({3, 0}, DType::f32)); });
  EXPECT_TRUE(has(msg, "relu_router") && has(msg, "E = 0")) << msg;
}

TEST(Router, SparsityOfAnEmptyRoutingIsAnError) {
  const ops::Routing r = ops::relu_router(Tensor::zeros({0, 4}, DType::f64));
  EXPECT_EQ(r.nonzero.item(), 0.0);
  EXPECT_EQ(ints(r.expert_counts), std::vector<int32_t>(4, 0));
  EXPECT_TRUE(has(error_of([&] { ops::sparsity(r); }), "no (token, expert) pairs"));
  EXPECT_TRUE(has(error_of([&] { ops::sparsity(ops::Routing{}); }), "sparsity"));
}

}  // namespace
}  // namespace remoe::test

namespace remoe::test {
namespace {

// --- TopK variants: selection bias, softmax after top-k --------------------------------------

TEST(TopkRouterBias, ChangesTheSelectionButNotTheGateValues) {
  // p = softmax(1.0, 0.6, 0.0) ≈ (.491, .329, .181).
  const std::vector<double> zv = {1.0, 0.6, 0.0};
  const auto p = softmax_row(zv);
  const Tensor z = f64({1, 3}, zv);
  const ops::Routing plain = ops::topk_router(z, 1);
  EXPECT_EQ(ints(plain.mask), (std::vector<int32_t>{1, 0, 0}));
  // A bias of 0.2 on expert 1 lifts its selection score to .529 > .491: expert 1 is chosen,
  // with its unbiased probability as the gate.
  const ops::Routing biased = ops::topk_router(z, 1, false, f64({3}, {0.0, 0.2, 0.0}));
  EXPECT_EQ(ints(biased.mask), (std::vector<int32_t>{0, 1, 0}));
  EXPECT_TRUE(all_close(values(biased.gates), {0.0, p[1], 0.0}, 1e-15, 1e-15));
  EXPECT_TRUE(all_close(biased.probs, plain.probs, 0, 0));
  EXPECT_EQ(ints(biased.expert_counts), (std::vector<int32_t>{0, 1, 0}));
  // Renormalised over the k = 2 selected (experts 1 and 2 under a bias on expert 2).
  const ops::Routing two = ops::topk_router(z, 2, true, f64({3}, {-0.5, 0.0, 0.0}));
  EXPECT_EQ(ints(two.mask), (std::vector<int32_t>{0, 1, 1}));
  EXPECT_TRUE(all_close(values(two.gates), {0.0, p[1] / (p[1] + p[2]), p[2] / (p[1] + p[2])},
                        1e-15, 1e-15));
  // A zero bias is no bias.
  const ops::Routing zero = ops::topk_router(z, 1, false, f64({3}, {0.0, 0.0, 0.0}));
  EXPECT_EQ(ints(zero.mask), ints(plain.mask));
  EXPECT_TRUE(all_close(zero.gates, plain.gates, 0, 0));
}

TEST(TopkRouterBias, GradCheckWithABias) {
  Rng rng(50);
  const Tensor z = leaf(topk_logits({7, 5, 2, RouterCase::kRandom}, 51), "z");
  const Tensor bias = f64({5}, {0.3, -0.2, 0.0, 0.1, -0.1});
  for (bool rn : {false, true}) {
    expect_gradcheck(
        [=](const std::vector<Tensor>& in) {
          const ops::Routing r = ops::topk_router(in[0], 2, rn, bias);
          return ops::add(r.gates, ops::scale(r.probs, 0.7));
        },
        {z});
  }
}

TEST(TopkRouterBias, WrongShapeIsAnError) {
  const Tensor z = Tensor::zeros({3, 4}, DType::f64);
  const std::string msg = error_of([&] { ops::topk_router(z, 1, false, f64({3}, {0, 0, 0})); });
  EXPECT_TRUE(has(msg, "topk_router") && has(msg, "bias")) << msg;
}

// Softmax after top-k (Megatron without --moe-router-pre-softmax) is renormalised top-k:
// exp(z_i) / Σ_sel exp(z_j) = p_i / Σ_sel p_j, the same function, gradients included.
TEST(TopkRouter, SoftmaxAfterTopkIsRenormalize) {
  Rng rng(52);
  const Tensor z = randn({6, 5}, DType::f64, rng, 2.0);
  const ops::Routing r = ops::topk_router(z, 3, true);
  const auto zv = values(z), g = values(r.gates);
  const auto m = ints(r.mask);
  for (int t = 0; t < 6; ++t) {
    std::vector<double> selected;
    for (int e = 0; e < 5; ++e)
      if (m[size_t(t * 5 + e)]) selected.push_back(zv[size_t(t * 5 + e)]);
    ASSERT_EQ(selected.size(), 3u);
    const auto soft = softmax_row(selected);
    size_t j = 0;
    for (int e = 0; e < 5; ++e)
      EXPECT_NEAR(g[size_t(t * 5 + e)], m[size_t(t * 5 + e)] ? soft[j++] : 0.0, 1e-15);
  }
}

}  // namespace
}  // namespace remoe::test
