// The whole model in f64: gradients of cross-entropy + Σ_l aux_l with respect to every
// parameter, for the dense FFN and every router; shapes and counts of the parameters.
#include "model/transformer.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

model::ModelConfig tiny(model::FfnKind ffn, model::RouterKind router) {
  model::ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_ffn = 6;
  c.ffn = ffn;
  c.router = router;
  c.n_experts = 4;
  c.top_k = router == model::RouterKind::topk ? 2 : 1;
  // NOTE: larger than the paper's 0.01 so router logits sit far from ReLU's kink and TopK's
  // selection boundaries compared with the finite-difference step.
  c.init_std = 0.5;
  return c;
}

struct Named {
  const char* name;
  model::FfnKind ffn;
  model::RouterKind router;
};

class WholeModel : public ::testing::TestWithParam<Named> {};

TEST_P(WholeModel, GradCheckOfLossWithRegulariser) {
  const Named p = GetParam();
  const model::Transformer m(tiny(p.ffn, p.router), 7, DType::f64);
  const int64_t B = 2, S = 3;
  const Tensor ids = Tensor::from_vector<int32_t>({B * S}, {1, 5, 9, 0, 3, 10});
  const Tensor targets = Tensor::from_vector<int32_t>({B * S}, {5, 9, 2, 3, 10, 4});
  const double lambda = 0.05;
  const auto results = gradcheck(
      [&](const std::vector<Tensor>&) {
        const model::ForwardOutput out = m.forward(ids, B, S, lambda);
        return ops::add(ops::cross_entropy(out.logits, targets), out.aux);
      },
      m.parameters());
  ASSERT_EQ(results.size(), m.parameters().size());
  EXPECT_LT(max_rel_error(results), kGradTol) << report(results);
  // Each parameter that the batch touches must get a gradient (embedding rows of unused ids
  // are zero, but the table as a whole is not).
  for (const auto& r : results) EXPECT_GT(r.numeric_norm, 0.0) << r.input << "\n" << report(results);
}

INSTANTIATE_TEST_SUITE_P(Ffn, WholeModel,
                         ::testing::Values(Named{"relu", model::FfnKind::moe, model::RouterKind::relu},
                                           Named{"topk", model::FfnKind::moe, model::RouterKind::topk},
                                           Named{"expert_choice", model::FfnKind::moe, model::RouterKind::expert_choice},
                                           Named{"hash", model::FfnKind::moe, model::RouterKind::hash},
                                           Named{"dense", model::FfnKind::dense, model::RouterKind::relu}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Transformer, ParameterShapesCountsAndInit) {
  model::ModelConfig c = tiny(model::FfnKind::moe, model::RouterKind::relu);
  c.init_std = 0.01;
  c.granularity = 2;  // E = 8, k = 2, expert d_ffn = 3
  const model::Transformer m(c, 1);
  int64_t expert = 0;
  for (const Tensor& t : m.parameters()) {
    if (t.name() == "layers.0.moe.w1") { EXPECT_EQ(t.shape(), (Shape{8, 3, 8})); }
    if (t.name() == "layers.1.moe.w2") { EXPECT_EQ(t.shape(), (Shape{8, 8, 3})); }
    if (t.name() == "layers.0.moe.router") { EXPECT_EQ(t.shape(), (Shape{8, 8})); }
    if (t.name() == "layers.0.attention.wk") { EXPECT_EQ(t.shape(), (Shape{4, 8})); }  // 1 kv head of 4
    if (t.name().find(".moe.w") != std::string::npos) expert += t.numel();
    if (t.name() == "norm") { EXPECT_EQ(values(t), std::vector<double>(8, 1.0)); }
  }
  EXPECT_EQ(expert, 2 * 3 * 8 * 8 * 3);
  EXPECT_EQ(m.n_active_params(), m.n_params() - expert + expert / 8 * 2);
  // Output projections start smaller: std 0.01 / sqrt(2 L).
  auto rms = [](const Tensor& t) {
    double s = 0;
    for (double v : values(t)) s += v * v;
    return std::sqrt(s / double(t.numel()));
  };
  for (const Tensor& t : m.parameters()) {
    if (t.name() == "tok_embeddings") { EXPECT_NEAR(rms(t), 0.01, 0.002); }
    if (t.name() == "layers.0.moe.w2") { EXPECT_NEAR(rms(t), 0.01 / 2.0, 0.001); }
  }
}

TEST(Transformer, SameSeedSameWeightsAndBadConfigIsAnError) {
  const auto c = tiny(model::FfnKind::moe, model::RouterKind::relu);
  const model::Transformer a(c, 3), b(c, 3), d(c, 4);
  EXPECT_EQ(values(a.parameters()[0]), values(b.parameters()[0]));  // the embedding
  EXPECT_NE(values(a.parameters()[0]), values(d.parameters()[0]));
  auto bad = c;
  bad.top_k = 5;
  EXPECT_NE(error_of([&] { model::Transformer m(bad, 1); }).find("top_k"), std::string::npos);
  bad = c;
  bad.d_model = 9;
  EXPECT_NE(error_of([&] { model::Transformer m(bad, 1); }).find("not divisible"), std::string::npos);
}

TEST(Transformer, ForwardReportsRoutingPerLayer) {
  const model::Transformer m(tiny(model::FfnKind::moe, model::RouterKind::topk), 2);
  const Tensor ids = Tensor::from_vector<int32_t>({4}, {1, 2, 3, 4});
  NoGradGuard no_grad;
  const model::ForwardOutput out = m.forward(ids, 1, 4, 0.0);
  EXPECT_EQ(out.logits.shape(), (Shape{4, 11}));
  ASSERT_EQ(out.layers.size(), 2u);
  for (const auto& l : out.layers) {
    EXPECT_DOUBLE_EQ(l.sparsity, 1.0 - 2.0 / 4.0);  // TopK: exactly k of E per token
    int sum = 0;
    for (int32_t c : l.expert_counts) sum += c;
    EXPECT_EQ(sum, 4 * 2);
  }
  EXPECT_NE(error_of([&] { m.forward(ids, 2, 4, 0.0); }).find("batch"), std::string::npos);
}

}  // namespace
}  // namespace remoe::test
