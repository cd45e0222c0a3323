// The routing front of the MoE layer (model/routing.h) through moe_forward and the Transformer:
// a fully dropped token passes only the residual, the TopK warm-up's k, the selection bias,
// the bias update, hash routing without router weights.
#include "model/moe.h"
#include "model/transformer.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

model::ModelConfig moe_config(model::RouterKind router, int64_t E, int64_t k) {
  model::ModelConfig c;
  c.d_model = 4;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_ffn = 6;
  c.router = router;
  c.n_experts = E;
  c.top_k = k;
  return c;
}

// Every token prefers expert 0 (router row 0 along x's first coordinate, which is positive).
model::MoeWeights weights(int64_t E, Rng& rng) {
  model::MoeWeights w;
  std::vector<double> wr(size_t(E * 4), 0.0);
  wr[0] = 3.0;
  w.router = Tensor::from_vector<double>({E, 4}, wr);
  w.router.set_requires_grad(true).set_name("router");
  w.w1 = param({E, 6, 4}, rng, "w1", 0.5);
  w.w3 = param({E, 6, 4}, rng, "w3", 0.5);
  w.w2 = param({E, 4, 6}, rng, "w2", 0.5);
  return w;
}

Tensor tokens(int64_t T, Rng& rng) {
  std::vector<double> x(size_t(T * 4));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < 4; ++j) x[size_t(t * 4 + j)] = j == 0 ? 1.0 + 0.1 * double(t) : 0.3 * rng.normal();
  return Tensor::from_vector<double>({T, 4}, x);
}

TEST(Capacity, AFullyDroppedTokenGetsExactlyZero) {
  // T = 4, E = 2, k = 1, factor 0.5: C = ceil(4 · 1/2 · 0.5) = 1. All four tokens choose expert
  // 0; it keeps one, so three tokens are fully dropped: their MoE output is exactly 0.
  for (model::DropPolicy policy : {model::DropPolicy::probs, model::DropPolicy::position}) {
    Rng rng(1);
    model::ModelConfig c = moe_config(model::RouterKind::topk, 2, 1);
    c.capacity_factor = 0.5;
    c.drop_policy = policy;
    const model::MoeWeights w = weights(2, rng);
    const Tensor x = tokens(4, rng);
    const model::MoeOutput out = model::moe_forward(x, w, c, 0.0);
    EXPECT_EQ(out.stats.routed, 4);
    EXPECT_EQ(out.stats.dropped, 3);
    EXPECT_EQ(out.stats.expert_counts, (std::vector<int32_t>{1, 0}));
    // probs keeps the token of highest p (the last: its first coordinate is largest); position
    // keeps the first.
    const int64_t kept = policy == model::DropPolicy::probs ? 3 : 0;
    const auto y = values(out.y);
    for (int64_t t = 0; t < 4; ++t) {
      double norm = 0;
      for (int64_t j = 0; j < 4; ++j) norm += std::abs(y[size_t(t * 4 + j)]);
      if (t == kept) EXPECT_GT(norm, 0.0) << "token " << t;
      else EXPECT_EQ(norm, 0.0) << "token " << t;
    }
    // Without a capacity nothing is dropped.
    c.capacity_factor = 0;
    const model::MoeOutput dropless = model::moe_forward(x, w, c, 0.0);
    EXPECT_EQ(dropless.stats.dropped, 0);
    EXPECT_EQ(dropless.stats.expert_counts, (std::vector<int32_t>{4, 0}));
  }
}

TEST(Capacity, GradCheckOfTheLayerWithDroppingAndZLoss) {
  Rng rng(2);
  model::ModelConfig c = moe_config(model::RouterKind::topk, 3, 1);
  c.capacity_factor = 1.0;
  c.z_loss_coeff = 0.1;
  model::MoeWeights w = weights(3, rng);
  w.router = param({3, 4}, rng, "router", 1.0);
  const Tensor x = tokens(6, rng);
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) {
        model::MoeWeights v = w;
        v.router = in[0];
        v.w1 = in[1];
        const model::MoeOutput out = model::moe_forward(x, v, c, 0.0);
        EXPECT_GT(out.stats.z_loss, 0.0);
        Rng s(3);
        const Tensor proj = randn({6, 4}, DType::f64, s);
        return ops::add(ops::reshape(ops::matmul(ops::reshape(out.y, {1, 24}),
                                                 ops::reshape(proj, {24, 1})), {}),
                        out.aux);
      },
      {w.router, w.w1});
}

TEST(Warmup, TopkRoutesKWarmExpertsForTheFirstSteps) {
  Rng rng(4);
  model::ModelConfig c = moe_config(model::RouterKind::topk, 4, 1);
  c.k_warm = 3;
  c.warm_steps = 5;
  model::MoeWeights w = weights(4, rng);
  w.router = param({4, 4}, rng, "router", 1.0);
  const Tensor x = tokens(5, rng);
  for (int64_t step : {int64_t(0), int64_t(4), int64_t(5), model::kAfterTraining}) {
    const model::MoeOutput out = model::moe_forward(x, w, c, 0.0, {}, {Tensor(), Tensor(), step});
    const int expected = step < 5 ? 3 : 1;
    EXPECT_DOUBLE_EQ(out.stats.sparsity, 1.0 - expected / 4.0) << "step " << step;
  }
}

TEST(ExpertBias, UpdateMovesEachBiasTowardsTheMeanLoad) {
  const model::ModelConfig c = [] {
    model::ModelConfig m = moe_config(model::RouterKind::topk, 4, 1);
    m.n_layers = 2;
    m.expert_bias = true;
    return m;
  }();
  model::RouterState s = model::initial_router_state(c, DType::f32);
  ASSERT_EQ(s.bias.size(), 2u);
  // Layer 0: loads 4, 0, 2, 2 (mean 2): the busy expert goes down, the idle one up, the others
  // stay. Layer 1: all equal, nothing moves.
  model::update_expert_bias(s, {{4, 0, 2, 2}, {1, 1, 1, 1}}, 0.125);
  EXPECT_EQ(s.bias[0].to_vector<float>(), (std::vector<float>{-0.125f, 0.125f, 0.0f, 0.0f}));
  EXPECT_EQ(s.bias[1].to_vector<float>(), (std::vector<float>{0, 0, 0, 0}));
  model::update_expert_bias(s, {{4, 0, 2, 2}, {0, 0, 0, 4}}, 0.125);
  EXPECT_EQ(s.bias[0].to_vector<float>(), (std::vector<float>{-0.25f, 0.25f, 0.0f, 0.0f}));
  EXPECT_EQ(s.bias[1].to_vector<float>(), (std::vector<float>{0.125f, 0.125f, 0.125f, -0.125f}));
  EXPECT_NE(error_of([&] { model::update_expert_bias(s, {{1, 2, 3, 4}}, 0.1); }).find("1 layers"),
            std::string::npos);
}

TEST(ExpertBias, TheTransformerHoldsOneBiasPerLayerThatSteersTheSelection) {
  model::ModelConfig c = moe_config(model::RouterKind::topk, 4, 1);
  c.n_layers = 2;
  c.vocab_size = 16;
  c.expert_bias = true;
  model::Transformer m(c, 5, DType::f64);
  ASSERT_EQ(m.router_state().bias.size(), 2u);
  EXPECT_EQ(m.router_state().bias[0].shape(), Shape{4});
  const Tensor ids = Tensor::from_vector<int32_t>({8}, {1, 2, 3, 4, 5, 6, 7, 8});
  const auto before = m.forward(ids, 1, 8, 0.0).layers;
  // A large bias on expert 2 of layer 0 sends every token there; layer 1 is unchanged.
  m.router_state().bias[0].data<double>()[2] = 10.0;
  const auto after = m.forward(ids, 1, 8, 0.0).layers;
  EXPECT_EQ(after[0].expert_counts, (std::vector<int32_t>{0, 0, 8, 0}));
  EXPECT_NE(before[0].expert_counts, after[0].expert_counts);
}

TEST(Hash, NoRouterWeightsAndTheIdsDecide) {
  model::ModelConfig c = moe_config(model::RouterKind::hash, 4, 1);
  c.vocab_size = 16;
  const model::Transformer m(c, 6, DType::f64);
  for (const Tensor& p : m.parameters()) EXPECT_EQ(p.name().find("router"), std::string::npos) << p.name();
  const Tensor ids = Tensor::from_vector<int32_t>({4}, {3, 3, 3, 3});
  const auto out = m.forward(ids, 1, 4, 0.0);
  const auto& counts = out.layers[0].expert_counts;
  EXPECT_EQ(*std::max_element(counts.begin(), counts.end()), 4) << "one id, one expert";
  // Without the ids the layer cannot route.
  Rng rng(7);
  const std::string msg = error_of([&] {
    model::moe_forward(tokens(4, rng), model::MoeWeights{}, c, 0.0);
  });
  EXPECT_NE(msg.find("model.router = \"hash\" needs the token ids"), std::string::npos) << msg;
}

TEST(ExpertChoice, RoutesThroughTheLayerWithExactCapacity) {
  Rng rng(8);
  model::ModelConfig c = moe_config(model::RouterKind::expert_choice, 4, 1);
  c.capacity_factor = 1.5;  // C = ceil(8 · 1/4 · 1.5) = 3
  model::MoeWeights w = weights(4, rng);
  w.router = param({4, 4}, rng, "router", 1.0);
  const model::MoeOutput out = model::moe_forward(tokens(8, rng), w, c, 0.0);
  EXPECT_EQ(out.stats.expert_counts, (std::vector<int32_t>{3, 3, 3, 3}));
  EXPECT_EQ(out.aux.item(), 0.0);
  EXPECT_FALSE(model::routing_warning(c).empty());
  EXPECT_TRUE(model::routing_warning(moe_config(model::RouterKind::topk, 4, 1)).empty());
}

}  // namespace
}  // namespace remoe::test
