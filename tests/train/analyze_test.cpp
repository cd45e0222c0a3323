// remoe analyze (train/analyze.h) on tiny models saved with save_checkpoint: frequency buckets
// counted by hand, per-layer sparsity against the model's own routing statistics, usage shares,
// the flip rate of a checkpoint against itself and another, and every error a user can cause.
#include "train/analyze.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "model/transformer.h"
#include "tests/temp_dir.h"
#include "tests/test_util.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data.h"
#include "train/estimate.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::expect_contains;
using test::TempDir;

void write(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

TrainConfig tiny(model::RouterKind router, const std::string& data_path, int64_t experts = 4) {
  TrainConfig c;
  c.model.d_model = 16;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.d_ffn = 24;
  c.model.ffn = model::FfnKind::moe;
  c.model.router = router;
  c.model.n_experts = experts;
  c.model.top_k = 1;
  c.model.init_std = 0.2;  // router logits of both signs: ReLU routing neither dense nor empty
  c.seq_len = 16;
  c.batch_size = 2;
  c.data_path = data_path;
  return c;
}

model::Transformer save_run(const TrainConfig& c, const std::string& run_dir, int64_t step,
                            uint64_t seed = 11) {
  model::Transformer m(c.model, seed);
  save_checkpoint(run_dir, step, m.parameters(), {}, {{"config", to_toml(c)}, {"lambda", 0.5}});
  return m;
}

// Some text with structure: words from a small list.
std::string words(int n, uint64_t x) {
  const char* w[] = {"the ", "cat ", "sat ", "on ", "a ", "mat. ", "Then ", "it ", "slept.\n"};
  std::string s;
  for (int i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    s += w[(x >> 33) % 9];
  }
  return s;
}

struct Fixture {
  TempDir dir;
  fs::path data = dir.path() / "train.txt";
  fs::path prose = dir.path() / "prose.txt";
  Fixture() {
    write(data, words(600, 1));
    write(prose, words(300, 2));
  }
  std::string run(const char* name) const { return (dir.path() / name).string(); }
};

TEST(FrequencyBucket, DecadesAreExactAtTheirEdges) {
  EXPECT_EQ(frequency_bucket(10, 10), 0);  // f = 1
  EXPECT_EQ(frequency_bucket(1, 10), 0);   // f = 0.1 exactly: the upper decade
  EXPECT_EQ(frequency_bucket(1, 11), 1);   // just under 0.1
  EXPECT_EQ(frequency_bucket(1, 100), 1);
  EXPECT_EQ(frequency_bucket(1, 101), 2);
  EXPECT_EQ(frequency_bucket(1, 10000000), 6);  // 1e-7
  EXPECT_EQ(frequency_bucket(1, 10000001), kFrequencyDecades - 1);
  EXPECT_EQ(frequency_bucket(1, 90000000), kFrequencyDecades - 1);
  EXPECT_EQ(frequency_bucket(0, 5), kUnseenBucket);
  expect_contains(error_of([] { frequency_bucket(3, 2); }), "count 3 of total 2");
}

TEST(ByteFrequencies, CountsBytesAndPairsOfAHandWrittenText) {
  TempDir dir;
  write(dir.path() / "t.txt", "abab\nab");
  const TokenSource s = open_text((dir.path() / "t.txt").string());
  const ByteFrequencies f = count_byte_frequencies(s, 0, s.size());
  EXPECT_EQ(f.n_bytes, 7);
  EXPECT_EQ(f.n_pairs, 6);
  EXPECT_EQ(f.bytes['a'], 3);
  EXPECT_EQ(f.bytes['b'], 3);
  EXPECT_EQ(f.bytes['\n'], 1);
  EXPECT_EQ(f.pairs['a' * 256 + 'b'], 3);
  EXPECT_EQ(f.pairs['b' * 256 + 'a'], 1);
  EXPECT_EQ(f.pairs['b' * 256 + '\n'], 1);
  EXPECT_EQ(f.pairs['\n' * 256 + 'a'], 1);
  const ByteFrequencies part = count_byte_frequencies(s, 2, 5);  // "ab\n"
  EXPECT_EQ(part.n_bytes, 3);
  EXPECT_EQ(part.bytes['a'], 1);
  EXPECT_EQ(part.pairs['b' * 256 + '\n'], 1);
  EXPECT_EQ(part.pairs['b' * 256 + 'a'], 0);  // the pair across the range's start is not in it
}

// TopK k = 1: every token has exactly one active expert, so each populated bucket's mean is 1,
// and the tokens per bucket follow from a text whose frequencies are known: in the training
// text 'a' has f = 0.999 (bucket 0), 'b' f = 0.001 (bucket 2), 'c' is unseen.
TEST(Analyze, FrequencyBucketsOfAHandWrittenText) {
  TempDir dir;
  write(dir.path() / "train.txt", std::string(999, 'a') + "b");
  // One window of 16 inputs (the 17th byte is only a target): 10 'a', 4 'b', 2 'c'.
  write(dir.path() / "probe.txt", "aabaacaabaacaabbX");
  TrainConfig c = tiny(model::RouterKind::topk, (dir.path() / "train.txt").string());
  c.val_fraction = 0;
  save_run(c, (dir.path() / "run").string(), 3);
  AnalyzeOptions o;
  o.texts = {{"probe", (dir.path() / "probe.txt").string()}};
  o.tokens = 16;
  o.batch_size = 1;
  const auto j = analyze_checkpoint((dir.path() / "run").string(), o);
  EXPECT_EQ(j["train_text"]["bytes"], 1000);
  const auto& t = j["texts"][0];
  EXPECT_EQ(t["tokens"], 16);
  EXPECT_EQ(t["windows"], 1);
  const auto& b = t["frequency"]["byte"]["buckets"];
  ASSERT_EQ(b.size(), size_t(kUnseenBucket + 1));
  EXPECT_EQ(b[0]["tokens"], 10);
  EXPECT_EQ(b[1]["tokens"], 0);
  EXPECT_EQ(b[2]["tokens"], 4);
  EXPECT_EQ(b[kUnseenBucket]["tokens"], 2);
  EXPECT_EQ(b[0]["active_experts_mean"], 1.0);
  EXPECT_EQ(b[2]["active_experts_mean"], 1.0);
  EXPECT_TRUE(b[1]["active_experts_mean"].is_null());
  // Pairs: 15 inside the window. "aa" has f = 998/999 (bucket 0), "ab" 1/999 (bucket 2), every
  // pair with a 'c' and "ba", "bb" are unseen: aa ×5 → bucket 0; ab ×3 → bucket 2;
  // ba ×2, bb ×1, ac ×2, ca ×2 → unseen (7).
  const auto& p = t["frequency"]["pair"]["buckets"];
  EXPECT_EQ(p[0]["tokens"], 5);
  EXPECT_EQ(p[2]["tokens"], 3);
  EXPECT_EQ(p[kUnseenBucket]["tokens"], 7);
  EXPECT_EQ(t["sparsity"], 0.75);  // 1 − k/E for TopK
}

TEST(Analyze, LayerSparsityIsTheRoutingCodesOnTheSameTokens) {
  Fixture f;
  const TrainConfig c = tiny(model::RouterKind::relu, f.data.string());
  const model::Transformer m = save_run(c, f.run("run"), 4);
  AnalyzeOptions o;
  o.texts = {{"prose", f.prose.string()}};
  o.tokens = c.batch_size * c.seq_len;  // exactly one batch: fixed_batch(..., 0, 1)
  const auto j = analyze_checkpoint(f.run("run"), o);

  const TokenSource src = open_text(f.prose.string());
  const Batch b = fixed_batch(src, 0, src.size(), c.seq_len, c.batch_size, 0, 1);
  const model::ForwardOutput out = m.forward(b.inputs, c.batch_size, c.seq_len, 0.0);
  const auto& t = j["texts"][0];
  ASSERT_EQ(t["layer_sparsity"].size(), out.layers.size());
  double mean = 0;
  bool mixed = false;
  for (size_t l = 0; l < out.layers.size(); ++l) {
    const double s = t["layer_sparsity"][l].get<double>();
    EXPECT_NEAR(s, out.layers[l].sparsity, 1e-12) << "layer " << l;
    mixed |= s > 0.05 && s < 0.95;
    mean += s / double(out.layers.size());
    // Usage from the same counts: c_e / Σ c.
    double total = 0;
    for (int32_t n : out.layers[l].expert_counts) total += n;
    for (size_t e = 0; e < out.layers[l].expert_counts.size(); ++e)
      EXPECT_NEAR(t["expert_usage"][l][e].get<double>(), out.layers[l].expert_counts[e] / total,
                  1e-12);
  }
  EXPECT_TRUE(mixed) << "the test model routes all or nothing; it checks little";
  EXPECT_NEAR(t["sparsity"].get<double>(), mean, 1e-12);
  // The default training text is the run's training split: data.path less its last 10%.
  const auto size = int64_t(fs::file_size(f.data));
  EXPECT_EQ(j["train_text"]["end"], size - int64_t(std::floor(double(size) * 0.1)));
  EXPECT_EQ(j["model"]["router"], "relu");
  EXPECT_EQ(j["model"]["target_sparsity"], 0.75);
}

TEST(Analyze, UsageSumsToOneAndBucketsHoldEveryToken) {
  Fixture f;
  const TrainConfig c = tiny(model::RouterKind::relu, f.data.string());
  save_run(c, f.run("run"), 4);
  AnalyzeOptions o;
  o.texts = {{"prose", f.prose.string()}, {"train", f.data.string()}};
  o.tokens = 100;  // rounds up to 4 batches of 2 windows of 16
  const auto j = analyze_checkpoint(f.run("run"), o);
  ASSERT_EQ(j["texts"].size(), 2u);
  for (const auto& t : j["texts"]) {
    EXPECT_EQ(t["tokens"], 128);
    EXPECT_EQ(t["windows"], 8);
    for (const auto& layer : t["expert_usage"]) {
      double s = 0;
      for (const auto& u : layer) s += u.get<double>();
      EXPECT_NEAR(s, 1.0, 1e-12);
    }
    int64_t bytes = 0, pairs = 0;
    double active_bytes = 0;
    for (const auto& b : t["frequency"]["byte"]["buckets"]) {
      bytes += b["tokens"].get<int64_t>();
      if (b["tokens"] > 0) active_bytes += b["active_experts"][0].get<double>() * b["tokens"].get<double>();
    }
    for (const auto& b : t["frequency"]["pair"]["buckets"]) pairs += b["tokens"].get<int64_t>();
    EXPECT_EQ(bytes, 128);
    EXPECT_EQ(pairs, 128 - 8);  // no pair at a window's first position
    // The buckets' active experts add up to the layer's: mean active experts × tokens.
    EXPECT_NEAR(active_bytes, t["active_experts"][0].get<double>() * 128, 1e-9);
    EXPECT_NEAR(t["active_experts"][0].get<double>(),
                4 * (1 - t["layer_sparsity"][0].get<double>()), 1e-12);
  }
}

TEST(Analyze, FlipRateOfACheckpointAgainstItselfIsZeroAndAgainstAnotherIsNot) {
  Fixture f;
  const TrainConfig c = tiny(model::RouterKind::relu, f.data.string());
  save_run(c, f.run("run"), 4, 11);
  save_run(c, f.run("run2"), 8, 12);  // other weights: another point of "training"
  AnalyzeOptions o;
  o.texts = {{"prose", f.prose.string()}};
  o.tokens = 64;
  o.compare = f.run("run");
  const auto same = analyze_checkpoint(f.run("run"), o);
  for (const auto& r : same["compare"]["texts"][0]["mask_flip_rate"]) EXPECT_EQ(r, 0.0);
  for (const auto& r : same["compare"]["texts"][0]["token_flip_rate"]) EXPECT_EQ(r, 0.0);
  EXPECT_EQ(same["compare"]["step"], 4);

  o.compare = f.run("run2");
  const auto diff = analyze_checkpoint(f.run("run"), o);
  const auto& cj = diff["compare"]["texts"][0];
  EXPECT_EQ(diff["compare"]["step"], 8);
  for (size_t l = 0; l < 2; ++l) {
    const double m = cj["mask_flip_rate"][l], t = cj["token_flip_rate"][l];
    EXPECT_GT(m, 0.0);
    EXPECT_GE(t, m);  // a token with a flipped entry counts once, with ≥ 1 of its E entries
    EXPECT_EQ(cj["flipped_pairs"][l].get<double>() / (64.0 * 4), m);
  }
}

TEST(Analyze, ErrorsNameWhatIsWrong) {
  Fixture f;
  const TrainConfig c = tiny(model::RouterKind::relu, f.data.string());
  save_run(c, f.run("run"), 4);
  AnalyzeOptions o;
  o.texts = {{"prose", f.prose.string()}};
  o.tokens = 32;

  AnalyzeOptions missing = o;
  missing.texts = {{"nope", (f.dir.path() / "missing.txt").string()}};
  expect_contains(error_of([&] { analyze_checkpoint(f.run("run"), missing); }), "missing.txt");

  write(f.dir.path() / "code.txt.xz", "not really xz");
  AnalyzeOptions xz = o;
  xz.texts = {{"code", (f.dir.path() / "code.txt.xz").string()}};
  expect_contains(error_of([&] { analyze_checkpoint(f.run("run"), xz); }), "xz -dk");

  expect_contains(error_of([&] { analyze_checkpoint(f.run("no_such_run"), o); }), "no_such_run");

  TrainConfig dense = c;
  dense.model.ffn = model::FfnKind::dense;
  save_run(dense, f.run("dense"), 4);
  expect_contains(error_of([&] { analyze_checkpoint(f.run("dense"), o); }), "dense model");
  AnalyzeOptions vs_dense = o;
  vs_dense.compare = f.run("dense");
  expect_contains(error_of([&] { analyze_checkpoint(f.run("run"), vs_dense); }), "dense model");

  save_run(tiny(model::RouterKind::relu, f.data.string(), 8), f.run("e8"), 4);
  AnalyzeOptions other = o;
  other.compare = f.run("e8");
  const std::string msg = error_of([&] { analyze_checkpoint(f.run("run"), other); });
  expect_contains(msg, "model.n_experts: 4 vs 8");
  expect_contains(msg, "--compare");

  AnalyzeOptions twice = o;
  twice.texts.push_back(o.texts[0]);
  expect_contains(error_of([&] { analyze_checkpoint(f.run("run"), twice); }),
                  "'prose' is given twice");
  AnalyzeOptions none = o;
  none.texts.clear();
  expect_contains(error_of([&] { analyze_checkpoint(f.run("run"), none); }), "--text");
  AnalyzeOptions no_tokens = o;
  no_tokens.tokens = 0;
  expect_contains(error_of([&] { analyze_checkpoint(f.run("run"), no_tokens); }), "--tokens");

  write(f.dir.path() / "short.txt", "tiny");
  AnalyzeOptions short_text = o;
  short_text.texts = {{"short", (f.dir.path() / "short.txt").string()}};
  expect_contains(error_of([&] { analyze_checkpoint(f.run("run"), short_text); }), "short.txt");

  expect_contains(error_of([] { parse_analyze_text("wiki"); }), "NAME=PATH");
  expect_contains(error_of([] { parse_analyze_text("=x.txt"); }), "NAME=PATH");
  expect_contains(error_of([] { parse_analyze_text("a b=x.txt"); }), "'a b'");
  const AnalyzeText t = parse_analyze_text("code_c=dir/a=b.txt");
  EXPECT_EQ(t.name, "code_c");
  EXPECT_EQ(t.path, "dir/a=b.txt");
}

// configs/study/ (run from the source root): every config parses, and the seven runs differ only
// in their FFN, at active parameters within 1% of the dense run's.
TEST(StudyConfigs, ParseAndMatchActiveParametersAndTokens) {
  const char* names[] = {"dense", "topk_e8", "remoe_e8", "topk_e32", "remoe_e32", "topk_e8_g4",
                         "remoe_e8_g4"};
  const TrainConfig dense = load_config("configs/study/dense.toml", {});
  const RunEstimate base = estimate_run(dense);
  for (const char* n : names) {
    const TrainConfig c = load_config(std::string("configs/study/") + n + ".toml", {});
    const RunEstimate e = estimate_run(c);
    EXPECT_NEAR(double(e.active_params) / double(base.active_params), 1.0, 0.01) << n;
    EXPECT_EQ(c.steps * c.batch_size * c.grad_accum * c.seq_len, 2500 * 32 * 1024) << n;
    EXPECT_EQ(c.seed, dense.seed) << n;
    EXPECT_EQ(c.data_path, dense.data_path) << n;
    EXPECT_EQ(c.val_path, dense.val_path) << n;
    EXPECT_EQ(c.model.d_model, 512) << n;
    EXPECT_EQ(c.model.expert_d_ffn() * c.model.active_experts(), 2048) << n;
    for (const ConfigDifference& d : config_differences(dense, c))
      EXPECT_TRUE(d.key.rfind("model.", 0) == 0 || d.key == "log.run_dir") << n << ": " << d.key;
  }
}

}  // namespace
}  // namespace remoe::train
