// The CLI's config surface: Megatron-LM aliases and the --dry-run estimate.
#include "model/transformer.h"
#include "tests/test_util.h"
#include "train/config.h"
#include "train/estimate.h"

namespace remoe::test {
namespace {

constexpr const char* kMinimal = "[data]\npath = \"x.txt\"\n";

TEST(MegatronAliases, MapToTheSameKeys) {
  const train::TrainConfig c = train::parse_config(
      kMinimal, "test.toml",
      {"--num-experts=16", "--moe-router-topk=2", "--moe-aux-loss-coeff=0.02", "--moe-granularity=2",
       "--hidden-size=64", "--num-attention-heads=4", "--num-query-groups=2", "--lr=1e-3",
       "--train-iters=77", "--moe-relu-routing", "--moe-relu-l1-reg-coeff-init=1e-7",
       "--model.renormalize=true", "--moe-router-pre-softmax"});
  EXPECT_EQ(c.model.n_experts, 16);
  EXPECT_EQ(c.model.top_k, 2);
  EXPECT_EQ(c.model.aux_coeff, 0.02);
  EXPECT_EQ(c.model.granularity, 2);
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.model.n_kv_heads, 2);
  EXPECT_EQ(c.lr, 1e-3);
  EXPECT_EQ(c.steps, 77);
  EXPECT_EQ(c.model.router, model::RouterKind::relu);
  EXPECT_EQ(c.lambda0, 1e-7);
  EXPECT_FALSE(c.model.renormalize);  // the later flag wins
}

TEST(MegatronAliases, EveryAliasNamesARealKeyAndIsInTheHelp) {
  const std::string toml = train::to_toml(train::TrainConfig{});
  const std::string help = train::options_help();
  for (const auto& [flag, key] : train::megatron_aliases()) {
    const std::string leaf = key.substr(key.find('.') + 1);
    EXPECT_NE(toml.find("\n" + leaf + " = "), std::string::npos) << flag << " → " << key;
    EXPECT_NE(help.find("--" + flag + " → " + key), std::string::npos) << flag;
  }
  // A bare flag that takes a value is still an error, naming the flag.
  EXPECT_NE(error_of([] { train::parse_config(kMinimal, "t", {"--num-experts"}); }).find("num-experts"),
            std::string::npos);
}

class Estimate : public ::testing::TestWithParam<model::FfnKind> {};

TEST_P(Estimate, ParameterCountsMatchTheModel) {
  train::TrainConfig c;
  c.data_path = "x";
  c.model.d_model = 24;
  c.model.n_layers = 3;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.d_ffn = 40;
  c.model.ffn = GetParam();
  c.model.n_experts = 4;
  c.model.top_k = 2;
  c.model.granularity = 2;
  const model::Transformer m(c.model, 1);
  const train::RunEstimate e = train::estimate_run(c);
  EXPECT_EQ(e.params, m.n_params());
  EXPECT_EQ(e.active_params, m.n_active_params());
  // 6 FLOPs per multiplied weight: everything active but the embedding table (a lookup).
  EXPECT_GT(e.flops_per_token, 6.0 * double(e.active_params - c.model.vocab_size * c.model.d_model));
  if (GetParam() == model::FfnKind::moe) {
    EXPECT_GT(e.flops_per_token_dense, e.flops_per_token);
    EXPECT_GT(e.activation_bytes_dense, e.activation_bytes);
  } else {
    EXPECT_EQ(e.flops_per_token_dense, e.flops_per_token);
  }
  EXPECT_EQ(e.weight_bytes, 16.0 * double(m.n_params()));
}

INSTANTIATE_TEST_SUITE_P(Ffn, Estimate, ::testing::Values(model::FfnKind::moe, model::FfnKind::dense));

TEST(Estimate, Paper182mShapeHasThePapersActiveCountWithItsVocabulary) {
  train::TrainConfig c = train::load_config("configs/paper_182m.toml", {"--model.vocab_size=51200"});
  const train::RunEstimate e = train::estimate_run(c);
  // REMOE_SPEC §5: 182M active parameters (GPT-2 vocabulary padded to 51200, untied embeddings,
  // both tables counted as the paper does).
  EXPECT_NEAR(double(e.active_params) / 1e6, 182.0, 1.5);
}

}  // namespace
}  // namespace remoe::test
