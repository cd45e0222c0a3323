// The MoE layer of REMOE_SPEC §1 composed from the ops — router → permute → gather → grouped
// GEMMs with SwiGLU → combine → regulariser — held to a plain loop over tokens and experts,
// and differentiated end to end.
#include <cmath>

#include "tests/test_util.h"

namespace remoe::test {
namespace {

struct MoeWeights {
  Tensor wr;  // (E, d) router
  Tensor w1;  // (E, F, d)
  Tensor w3;  // (E, F, d)
  Tensor w2;  // (E, d, F)
};

struct MoeOut {
  Tensor y;        // (T, d)
  Tensor aux;      // ()
  ops::Routing routing;
};

enum class Router { relu, topk };

MoeOut moe_layer(const Tensor& x, const MoeWeights& w, Router router, int k, double coeff) {
  const Tensor logits = ops::linear(x, w.wr);
  ops::Routing r = router == Router::relu ? ops::relu_router(logits) : ops::topk_router(logits, k);
  const ops::Permutation perm = ops::permute(r.mask);
  const Tensor xs = ops::gather_rows(x, perm);
  const Tensor h = ops::swiglu(ops::grouped_matmul(xs, w.w1, perm), ops::grouped_matmul(xs, w.w3, perm));
  const Tensor y = ops::combine(ops::grouped_matmul(h, w.w2, perm), r.gates, perm);
  const Tensor& scores = router == Router::relu ? r.gates : r.probs;
  const Tensor aux = ops::load_balance_loss(scores, r.expert_counts, coeff, k);
  return {y, aux, r};
}

// Σ_e gate[t, e] · W2_e (silu(W1_e x_t) ⊙ W3_e x_t), written as loops over tokens and experts.
std::vector<double> reference_layer(const Tensor& x, const MoeWeights& w, Router router, int k) {
  const int64_t T = x.dim(0), d = x.dim(1), E = w.wr.dim(0), F = w.w1.dim(1);
  const double *X = x.data<double>(), *WR = w.wr.data<double>(), *W1 = w.w1.data<double>(),
               *W3 = w.w3.data<double>(), *W2 = w.w2.data<double>();
  std::vector<double> y(size_t(T * d), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> z(static_cast<size_t>(E)), gate(static_cast<size_t>(E), 0.0);
    for (int64_t e = 0; e < E; ++e) {
      z[size_t(e)] = 0;
      for (int64_t j = 0; j < d; ++j) z[size_t(e)] += X[t * d + j] * WR[e * d + j];
    }
    if (router == Router::relu) {
      for (int64_t e = 0; e < E; ++e) gate[size_t(e)] = std::max(z[size_t(e)], 0.0);
    } else {
      double mx = z[0], sum = 0;
      for (double v : z) mx = std::max(mx, v);
      std::vector<double> p(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) sum += p[size_t(e)] = std::exp(z[size_t(e)] - mx);
      for (double& v : p) v /= sum;
      for (int pick = 0; pick < k; ++pick) {  // the k largest, lower index on ties
        int64_t best = -1;
        for (int64_t e = 0; e < E; ++e)
          if (gate[size_t(e)] == 0 && (best < 0 || p[size_t(e)] > p[size_t(best)])) best = e;
        gate[size_t(best)] = p[size_t(best)];
      }
    }
    for (int64_t e = 0; e < E; ++e) {
      if (gate[size_t(e)] <= 0) continue;
      std::vector<double> h(static_cast<size_t>(F));
      for (int64_t f = 0; f < F; ++f) {
        double a = 0, b = 0;
        for (int64_t j = 0; j < d; ++j) {
          a += W1[(e * F + f) * d + j] * X[t * d + j];
          b += W3[(e * F + f) * d + j] * X[t * d + j];
        }
        h[size_t(f)] = a / (1 + std::exp(-a)) * b;
      }
      for (int64_t j = 0; j < d; ++j) {
        double o = 0;
        for (int64_t f = 0; f < F; ++f) o += W2[(e * d + j) * F + f] * h[size_t(f)];
        y[size_t(t * d + j)] += gate[size_t(e)] * o;
      }
    }
  }
  return y;
}

// Inputs whose routing is known by construction (d ≥ 2): with u = e0, v = e1,
//   experts 0..E−2 route along +u, the last expert along −u − v;
//   token 0 (when T > 1) is −u + 2v: negative logits everywhere (no active expert under ReLU);
//   the other tokens are +u + noise: active on experts 0..E−2, never on the last one.
// Every logit is at least ~0.4 away from 0, so finite differences never cross a ReLU kink.
struct Case {
  Tensor x;
  MoeWeights w;
};

Case make_case(int64_t T, int64_t d, int64_t E, int64_t F, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> x(size_t(T * d)), wr(size_t(E * d));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < d; ++j) {
      const bool idle = t == 0 && T > 1;
      const double base = idle ? (j == 0 ? -1.0 : j == 1 ? 2.0 : 0.0) : (j == 0 ? 1.0 : 0.0);
      x[size_t(t * d + j)] = base + 0.1 * rng.normal();
    }
  for (int64_t e = 0; e < E; ++e)
    for (int64_t j = 0; j < d; ++j) {
      const bool last = e == E - 1 && E > 1;
      const double base = last ? (j <= 1 ? -1.0 : 0.0) : (j == 0 ? 1.0 : 0.0);
      wr[size_t(e * d + j)] = base + 0.1 * rng.normal();
    }
  Case c;
  c.x = Tensor::from_vector<double>({T, d}, x);
  c.x.set_requires_grad(true).set_name("x");
  c.w.wr = Tensor::from_vector<double>({E, d}, wr);
  c.w.wr.set_requires_grad(true).set_name("wr");
  c.w.w1 = param({E, F, d}, rng, "w1", 0.5);
  c.w.w3 = param({E, F, d}, rng, "w3", 0.5);
  c.w.w2 = param({E, d, F}, rng, "w2", 0.5);
  return c;
}

struct Shape4 {
  int64_t T, d, E, F;
};

class MoeLayer : public ::testing::TestWithParam<Shape4> {};

TEST_P(MoeLayer, ReluForwardMatchesThePlainLoop) {
  const auto [T, d, E, F] = GetParam();
  const Case c = make_case(T, d, E, F, 11);
  const MoeOut out = moe_layer(c.x, c.w, Router::relu, 1, 0.0);
  clear_tape();
  EXPECT_TRUE(all_close(values(out.y), reference_layer(c.x, c.w, Router::relu, 1), 1e-12, 1e-10));
  if (T > 1) {
    // Token 0 has no active expert: only the residual would pass, the layer adds exactly zero.
    for (int64_t j = 0; j < d; ++j) EXPECT_EQ(out.y.data<double>()[j], 0.0);
    EXPECT_EQ(out.routing.token_counts.to_vector<int32_t>()[0], 0);
  }
  if (E > 1) { EXPECT_EQ(out.routing.expert_counts.to_vector<int32_t>()[size_t(E - 1)], 0); }
}

TEST_P(MoeLayer, TopkForwardMatchesThePlainLoop) {
  const auto [T, d, E, F] = GetParam();
  const Case c = make_case(T, d, E, F, 12);
  for (int k = 1; k <= std::min<int64_t>(2, E); ++k) {
    const MoeOut out = moe_layer(c.x, c.w, Router::topk, k, 0.01);
    clear_tape();
    EXPECT_TRUE(all_close(values(out.y), reference_layer(c.x, c.w, Router::topk, k), 1e-12, 1e-10)) << "k = " << k;
    EXPECT_EQ(out.routing.nonzero.item(), double(T * k));
  }
}

// A training-style scalar, cross-entropy of a readout of y plus the regulariser, through every
// op of the layer: gradients for the input, the router and all expert weights.
TEST_P(MoeLayer, ReluLossGradCheck) {
  const auto [T, d, E, F] = GetParam();
  const Case c = make_case(T, d, E, F, 13);
  Rng rng(14);
  const Tensor readout = randn({5, d}, DType::f64, rng);
  std::vector<int32_t> targets(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) targets[size_t(t)] = int32_t(t % 5);
  const Tensor tg = Tensor::from_vector<int32_t>({T}, targets);
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) {
        const MoeOut out = moe_layer(in[0], {in[1], in[2], in[3], in[4]}, Router::relu, 1, 0.3);
        const Tensor y = ops::add(in[0], out.y);  // the residual keeps token 0's gradient alive
        return ops::add(ops::cross_entropy(ops::linear(y, readout), tg), out.aux);
      },
      {c.x, c.w.wr, c.w.w1, c.w.w3, c.w.w2});
}

TEST_P(MoeLayer, TopkLossGradCheck) {
  const auto [T, d, E, F] = GetParam();
  const Case c = make_case(T, d, E, F, 15);
  Rng rng(16);
  const Tensor readout = randn({4, d}, DType::f64, rng);
  const Tensor tg = Tensor::full({T}, 1, DType::i32);
  const auto results = gradcheck(
      [&](const std::vector<Tensor>& in) {
        const MoeOut out = moe_layer(in[0], {in[1], in[2], in[3], in[4]}, Router::topk, 1, 0.01);
        return ops::add(ops::cross_entropy(ops::linear(out.y, readout), tg), out.aux);
      },
      {c.x, c.w.wr, c.w.w1, c.w.w3, c.w.w2});
  EXPECT_LT(max_rel_error(results), kGradTol) << report(results);
}

TEST_P(MoeLayer, AnExpertWithNoTokenGetsZeroGradient) {
  const auto [T, d, E, F] = GetParam();
  if (E < 2) GTEST_SKIP() << "needs an idle expert";
  const Case c = make_case(T, d, E, F, 17);
  const MoeOut out = moe_layer(c.x, c.w, Router::relu, 1, 0.5);
  backward(ops::add(out.aux, ops::cross_entropy(out.y, Tensor::full({T}, 0, DType::i32))));
  for (const Tensor& w : {c.w.w1, c.w.w3, c.w.w2}) {
    const std::vector<double> g = values(w.grad());
    const size_t per_expert = g.size() / size_t(E);
    for (size_t i = per_expert * size_t(E - 1); i < g.size(); ++i) ASSERT_EQ(g[i], 0.0) << w.name();
    double active = 0;
    for (size_t i = 0; i < per_expert; ++i) active += std::abs(g[i]);
    EXPECT_GT(active, 0.0) << w.name() << ": expert 0 is active and must get a gradient";
  }
  for (const Tensor& t : {c.x, c.w.wr, c.w.w1, c.w.w3, c.w.w2}) t.zero_grad();
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeLayer,
                         ::testing::Values(Shape4{1, 2, 1, 1},   // one token, one expert
                                           Shape4{2, 3, 2, 2},
                                           Shape4{5, 4, 3, 3},   // not powers of two
                                           Shape4{7, 3, 4, 2}));

// ReMoE's regulariser through the router: ∂aux/∂z = λ·E·c_e/(k·T²) on active pairs, 0 elsewhere.
TEST(MoeLayerRegulariser, GradientThroughTheReluRouter) {
  const int64_t T = 6, E = 4;
  const double lambda = 0.7;
  Rng rng(21);
  std::vector<double> zv(size_t(T * E));
  for (double& v : zv) {
    v = rng.normal();
    if (std::abs(v) < 0.05) v = 0.5;
  }
  Tensor z = Tensor::from_vector<double>({T, E}, zv);
  z.set_requires_grad(true);
  const ops::Routing r = ops::relu_router(z);
  backward(ops::load_balance_loss(r.gates, r.expert_counts, lambda, 1));
  const auto mask = r.mask.to_vector<int32_t>();
  const auto counts = r.expert_counts.to_vector<int32_t>();
  const auto grad = values(z.grad());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const size_t i = size_t(t * E + e);
      const double expected = mask[i] ? lambda * E * counts[size_t(e)] / double(T * T) : 0.0;
      EXPECT_NEAR(grad[i], expected, 1e-15) << "t " << t << " e " << e;
    }
}

}  // namespace
}  // namespace remoe::test
