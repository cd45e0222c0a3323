// remoe export (HF folder from a checkpoint) and remoe eval (loss of a checkpoint on fixed
// windows), on tiny models saved with save_checkpoint in a temp dir.
#include "train/export.h"

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <random>

#include "model/transformer.h"
#include "tests/temp_dir.h"
#include "tests/test_util.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/eval.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;
using test::expect_contains;
using test::read_file;
using test::error_of;
using test::TempDir;

std::vector<float> floats(const Tensor& t) { return t.to_vector<float>(); }

// Element range [i·n, (i+1)·n) of a tensor's values: expert i of an (E, ...) weight.
std::vector<float> slab(const Tensor& t, int64_t i, int64_t n) {
  const std::vector<float> v = floats(t);
  return {v.begin() + i * n, v.begin() + (i + 1) * n};
}

TrainConfig tiny(model::FfnKind ffn, model::RouterKind router) {
  TrainConfig c;
  c.model.d_model = 16;
  c.model.n_layers = 2;
  c.model.n_heads = 4;
  c.model.n_kv_heads = 2;
  c.model.d_ffn = 24;
  c.model.ffn = ffn;
  c.model.router = router;
  c.model.n_experts = 3;
  c.model.top_k = 1;
  c.model.init_std = 0.1;
  c.seq_len = 8;
  c.batch_size = 2;
  c.eval_batches = 3;
  c.data_path = "unused.txt";
  return c;
}

// A model with seeded random weights saved as step 5 of a run in `run_dir`, as the trainer saves
// it (state.json holds the resolved config and λ).
model::Transformer save_run(const TrainConfig& c, const std::string& run_dir, uint64_t seed = 11) {
  model::Transformer m(c.model, seed);
  save_checkpoint(run_dir, 5, m.parameters(), {}, {{"config", to_toml(c)}, {"lambda", 0.25}});
  return m;
}

std::map<std::string, Tensor> by_name(const std::vector<Tensor>& ts) {
  std::map<std::string, Tensor> out;
  for (const Tensor& t : ts) out.emplace(t.name(), t);
  return out;
}

// Every HF tensor of an exported folder against the model it came from: names, shapes, values.
void expect_hf_weights(const std::string& file, const model::Transformer& m) {
  const model::ModelConfig& c = m.config();
  std::map<std::string, std::string> meta;
  const std::vector<Tensor> loaded = load_safetensors(file, &meta);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"format", "pt"}}));
  const auto hf = by_name(loaded);
  const auto p = by_name(m.parameters());
  const bool moe = c.ffn == model::FfnKind::moe;
  const int64_t E = c.experts(), F = c.expert_d_ffn(), d = c.d_model;
  const int64_t per_layer = moe ? 6 + 1 + 3 * E : 9;
  EXPECT_EQ(int64_t(loaded.size()), 3 + c.n_layers * per_layer);
  EXPECT_EQ(hf.size(), loaded.size()) << "duplicate names";

  auto same = [&](const std::string& hf_name, const std::string& remoe_name) {
    SCOPED_TRACE(hf_name);
    ASSERT_TRUE(hf.count(hf_name));
    const Tensor& a = hf.at(hf_name);
    const Tensor& b = p.at(remoe_name);
    EXPECT_EQ(a.shape(), b.shape());
    EXPECT_EQ(a.dtype(), DType::f32);
    EXPECT_EQ(floats(a), floats(b));
  };
  same("model.embed_tokens.weight", "tok_embeddings");
  same("model.norm.weight", "norm");
  same("lm_head.weight", "output");
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string h = "model.layers." + std::to_string(i) + ".";
    const std::string r = "layers." + std::to_string(i) + ".";
    same(h + "input_layernorm.weight", r + "attention_norm");
    same(h + "self_attn.q_proj.weight", r + "attention.wq");
    same(h + "self_attn.k_proj.weight", r + "attention.wk");
    same(h + "self_attn.v_proj.weight", r + "attention.wv");
    same(h + "self_attn.o_proj.weight", r + "attention.wo");
    same(h + "post_attention_layernorm.weight", r + "ffn_norm");
    if (!moe) {
      same(h + "mlp.gate_proj.weight", r + "ffn.w1");
      same(h + "mlp.up_proj.weight", r + "ffn.w3");
      same(h + "mlp.down_proj.weight", r + "ffn.w2");
      continue;
    }
    same(h + "block_sparse_moe.gate.weight", r + "moe.router");
    EXPECT_EQ(hf.at(h + "block_sparse_moe.gate.weight").shape(), (Shape{E, d}));
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = h + "block_sparse_moe.experts." + std::to_string(e) + ".";
      SCOPED_TRACE(x);
      ASSERT_TRUE(hf.count(x + "w1.weight") && hf.count(x + "w2.weight") &&
                  hf.count(x + "w3.weight"));
      EXPECT_EQ(hf.at(x + "w1.weight").shape(), (Shape{F, d}));
      EXPECT_EQ(hf.at(x + "w3.weight").shape(), (Shape{F, d}));
      EXPECT_EQ(hf.at(x + "w2.weight").shape(), (Shape{d, F}));
      EXPECT_EQ(floats(hf.at(x + "w1.weight")), slab(p.at(r + "moe.w1"), e, F * d));
      EXPECT_EQ(floats(hf.at(x + "w3.weight")), slab(p.at(r + "moe.w3"), e, F * d));
      EXPECT_EQ(floats(hf.at(x + "w2.weight")), slab(p.at(r + "moe.w2"), e, d * F));
    }
  }
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

TEST(Export, ReluMoeIsMixtralWithEveryExpertAndAWarning) {
  TempDir dir;
  const TrainConfig c = tiny(model::FfnKind::moe, model::RouterKind::relu);
  const model::Transformer m = save_run(c, dir.file("run"));
  const ExportResult r = export_hf(dir.file("run"), dir.file("hf"));
  EXPECT_EQ(r.architecture, "MixtralForCausalLM");
  EXPECT_EQ(r.checkpoint, dir.file("run") + "/checkpoints/step_00000005");
  expect_hf_weights(dir.file("hf/model.safetensors"), m);
  ASSERT_EQ(r.warnings.size(), 1u);
  expect_contains(r.warnings[0], "no Hugging Face architecture");

  const nlohmann::json j = read_json(dir.file("hf/config.json"));
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"MixtralForCausalLM"}));
  EXPECT_EQ(j["model_type"], "mixtral");
  EXPECT_EQ(j["hidden_size"], 16);
  EXPECT_EQ(j["intermediate_size"], 24);
  EXPECT_EQ(j["num_hidden_layers"], 2);
  EXPECT_EQ(j["num_attention_heads"], 4);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["head_dim"], 4);
  EXPECT_EQ(j["vocab_size"], 256);
  EXPECT_EQ(j["max_position_embeddings"], 8);
  EXPECT_EQ(j["rms_norm_eps"], 1e-5);
  EXPECT_EQ(j["rope_theta"], 1e6);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["num_local_experts"], 3);
  EXPECT_EQ(j["num_experts_per_tok"], 1);
  EXPECT_EQ(j["torch_dtype"], "float32");
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_TRUE(j["eos_token_id"].is_null());
  const nlohmann::json& info = j["remoe"];
  EXPECT_EQ(info["router"], "relu");
  EXPECT_EQ(info["renormalize"], false);
  EXPECT_EQ(info["hf_forward_matches"], false);
  EXPECT_EQ(info["warnings"].size(), 1u);
  EXPECT_EQ(info["step"], 5);
  EXPECT_EQ(info["lambda"], 0.25);
  EXPECT_EQ(info["granularity"], 1);

  const std::string readme = read_file(dir.file("hf/README.md"));
  expect_contains(readme, "MixtralForCausalLM");
  expect_contains(readme, "Tokenizer: bytes");
  expect_contains(readme, "encode(\"utf-8\")");
  expect_contains(readme, "**No**");
  expect_contains(readme, "patch_moe_routing");
}

TEST(Export, DenseIsLlamaAndMatchesHf) {
  TempDir dir;
  const TrainConfig c = tiny(model::FfnKind::dense, model::RouterKind::relu);
  const model::Transformer m = save_run(c, dir.file("run"));
  const ExportResult r = export_hf(dir.file("run"), dir.file("hf"));
  EXPECT_EQ(r.architecture, "LlamaForCausalLM");
  EXPECT_TRUE(r.warnings.empty());
  expect_hf_weights(dir.file("hf/model.safetensors"), m);
  const nlohmann::json j = read_json(dir.file("hf/config.json"));
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["intermediate_size"], 24);
  EXPECT_FALSE(j.contains("num_local_experts"));
  EXPECT_EQ(j["remoe"]["ffn"], "dense");
  EXPECT_EQ(j["remoe"]["hf_forward_matches"], true);
  expect_contains(read_file(dir.file("hf/README.md")), "Yes, up to float rounding");
}

TEST(Export, TopKWarnsUnlessRenormalisedOrEveryExpertIsActive) {
  TrainConfig c = tiny(model::FfnKind::moe, model::RouterKind::topk);
  c.model.top_k = 2;
  const model::Transformer m(c.model, 3);
  HfModel hf = to_hf(c, m.parameters());
  ASSERT_EQ(hf.warnings.size(), 1u);
  expect_contains(hf.warnings[0], "raw softmax probabilities");
  EXPECT_EQ(
      hf.config["remoe"]["gate"].get<std::string>().find("not renormalised") != std::string::npos,
      true);

  c.model.renormalize = true;
  hf = to_hf(c, model::Transformer(c.model, 3).parameters());
  EXPECT_TRUE(hf.warnings.empty());
  EXPECT_EQ(hf.config["remoe"]["renormalize"], true);
  EXPECT_EQ(hf.config["remoe"]["hf_forward_matches"], true);

  // k = E: the k probabilities sum to 1 already, renormalised or not.
  c.model.renormalize = false;
  c.model.top_k = 3;
  EXPECT_TRUE(to_hf(c, model::Transformer(c.model, 3).parameters()).warnings.empty());
}

TEST(Export, GranularityMultipliesExpertsAndDividesTheirSize) {
  TrainConfig c = tiny(model::FfnKind::moe, model::RouterKind::relu);
  c.model.granularity = 2;  // E 3 → 6, k 1 → 2, F 24 → 12
  const model::Transformer m(c.model, 4);
  const HfModel hf = to_hf(c, m.parameters(), {{"step", 9}});
  EXPECT_EQ(hf.config["num_local_experts"], 6);
  EXPECT_EQ(hf.config["num_experts_per_tok"], 2);
  EXPECT_EQ(hf.config["intermediate_size"], 12);
  EXPECT_EQ(hf.config["remoe"]["n_experts"], 3);
  EXPECT_EQ(hf.config["remoe"]["granularity"], 2);
  EXPECT_EQ(hf.config["remoe"]["step"], 9);
  const auto t = by_name(hf.tensors);
  ASSERT_TRUE(t.count("model.layers.1.block_sparse_moe.experts.5.w2.weight"));
  EXPECT_EQ(t.at("model.layers.1.block_sparse_moe.experts.5.w2.weight").shape(), (Shape{16, 12}));
  EXPECT_FALSE(t.count("model.layers.1.block_sparse_moe.experts.6.w2.weight"));
  // Non-expert tensors share the parameters' storage (no copy); the parameters keep their names.
  EXPECT_TRUE(t.at("lm_head.weight").same_storage(m.parameters().back()));
  EXPECT_EQ(m.parameters().back().name(), "output");
}

TEST(Export, ParametersThatDoNotFitTheMappingAreErrors) {
  const TrainConfig c = tiny(model::FfnKind::dense, model::RouterKind::relu);
  const model::Transformer m(c.model, 1);
  std::vector<Tensor> params = m.parameters();

  std::vector<Tensor> extra = params;
  extra.push_back(Tensor::zeros({16}, DType::f32).set_name("layers.0.attention.bias"));
  expect_contains(error_of([&] { to_hf(c, extra); }),
                  "parameter 'layers.0.attention.bias' (16) has no Hugging Face name");

  std::vector<Tensor> missing(params.begin(), params.end() - 1);
  expect_contains(error_of([&] { to_hf(c, missing); }), "no parameter 'output'");

  TrainConfig wider = c;
  wider.model.d_ffn = 32;
  expect_contains(error_of([&] { to_hf(wider, params); }),
                  "parameter 'layers.0.ffn.w1' is (24, 16), the config says (32, 16)");
}

TEST(Export, RefusesToOverwriteTheCheckpointAndBadPaths) {
  TempDir dir;
  const TrainConfig c = tiny(model::FfnKind::dense, model::RouterKind::relu);
  save_run(c, dir.file("run"));
  const std::string ck = dir.file("run") + "/checkpoints/step_00000005";
  expect_contains(error_of([&] { export_hf(ck, ck); }), "is the checkpoint directory itself");
  EXPECT_TRUE(fs::exists(ck + "/model.safetensors"));
  std::ofstream(dir.file("file")) << "x";
  expect_contains(error_of([&] { export_hf(ck, dir.file("file")); }),
                  "exists and is not a directory");
  expect_contains(error_of([&] { export_hf(dir.file("nothing"), dir.file("hf")); }),
                  "does not exist");
  fs::create_directories(dir.file("empty_run"));
  expect_contains(error_of([&] { export_hf(dir.file("empty_run"), dir.file("hf")); }),
                  "neither a checkpoint");

  // A checkpoint without the config it was trained with cannot be rebuilt.
  model::Transformer m(c.model, 1);
  save_checkpoint(dir.file("noconfig"), 1, m.parameters(), {}, {{"lambda", 0.0}});
  expect_contains(error_of([&] { export_hf(dir.file("noconfig"), dir.file("hf")); }),
                  "state.json has no \"config\"");
  // Weights that do not fit the saved config.
  TrainConfig other = c;
  other.model.d_ffn = 32;
  save_checkpoint(dir.file("mismatch"), 1, m.parameters(), {}, {{"config", to_toml(other)}});
  expect_contains(error_of([&] { export_hf(dir.file("mismatch"), dir.file("hf")); }),
                  "layers.0.ffn.w1");
}

// --- eval ------------------------------------------------------------------------------

// A text file of `n` pseudo-random printable bytes.
std::string write_text_file(const TempDir& dir, const std::string& name, int64_t n) {
  std::string s;
  uint32_t x = 12345;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s.push_back(char('a' + (x >> 24) % 26));
  }
  std::ofstream(dir.file(name), std::ios::binary) << s;
  return dir.file(name);
}

// The mean over batches of the model's cross-entropy on fixed_batch windows, computed here.
double expected_loss(const model::Transformer& m, const TokenSource& source, int64_t begin,
                     const TrainConfig& c, int64_t batches) {
  NoGradGuard no_grad;
  double total = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const Batch b = fixed_batch(source, begin, source.size(), c.seq_len, c.batch_size, i, batches);
    total += ops::cross_entropy(m.forward(b.inputs, c.batch_size, c.seq_len, 0.0).logits, b.targets)
                 .item();
  }
  return total / double(batches);
}

// Per MoE layer, the active pairs of each expert over the same windows, counted here from the
// routing masks.
std::vector<std::vector<double>> expected_counts(const model::Transformer& m,
                                                 const TokenSource& source, int64_t begin,
                                                 const TrainConfig& c, int64_t batches) {
  NoGradGuard no_grad;
  std::vector<std::vector<double>> counts;
  for (int64_t i = 0; i < batches; ++i) {
    const Batch b = fixed_batch(source, begin, source.size(), c.seq_len, c.batch_size, i, batches);
    const model::ForwardOutput out = m.forward(b.inputs, c.batch_size, c.seq_len, 0.0);
    counts.resize(out.layers.size());
    for (size_t l = 0; l < out.layers.size(); ++l) {
      const Tensor& mask = out.layers[l].mask;  // (T, E)
      const std::vector<int32_t> a = mask.to_vector<int32_t>();
      const auto E = size_t(mask.dim(1));
      counts[l].resize(E, 0.0);
      for (size_t j = 0; j < a.size(); ++j) counts[l][j % E] += a[j];
    }
  }
  return counts;
}

TEST(Eval, ValidationSplitByDefaultAndAWholeFileWithText) {
  TempDir dir;
  TrainConfig c = tiny(model::FfnKind::moe, model::RouterKind::relu);
  c.data_path = write_text_file(dir, "data.txt", 400);
  c.val_fraction = 0.25;
  const model::Transformer m = save_run(c, dir.file("run"));

  const EvalResult r = evaluate_checkpoint(dir.file("run"), {});
  const Corpus corpus = load_text(c.data_path, c.val_fraction);
  EXPECT_EQ(r.loss, expected_loss(m, corpus.val, corpus.val_begin, c, 3));
  EXPECT_GT(r.loss, 1.0);  // a random model: about ln 256 ≈ 5.5
  EXPECT_DOUBLE_EQ(r.bpb, r.loss / std::numbers::ln2);
  EXPECT_EQ(r.split, "validation");
  EXPECT_EQ(r.batches, 3);
  EXPECT_EQ(r.tokens, 3 * 2 * 8);
  EXPECT_EQ(r.step, 5);
  const auto j = r.to_json();
  EXPECT_EQ(j["loss"], r.loss);
  expect_contains(r.line(), "(step 5)");
  // The routing over the same windows: sparsity and expert load per layer.
  const auto counts = expected_counts(m, corpus.val, corpus.val_begin, c, 3);
  ASSERT_EQ(counts.size(), size_t(c.model.n_layers));
  ASSERT_EQ(r.layer_sparsity.size(), counts.size());
  ASSERT_EQ(r.expert_load.size(), counts.size());
  for (size_t l = 0; l < counts.size(); ++l) {
    double active = 0;
    for (double v : counts[l]) active += v;
    ASSERT_GT(active, 0) << "layer " << l;
    const double experts = double(c.model.experts());
    EXPECT_DOUBLE_EQ(r.layer_sparsity[l], 1.0 - active / (double(r.tokens) * experts)) << l;
    ASSERT_EQ(r.expert_load[l].size(), counts[l].size());
    for (size_t e = 0; e < counts[l].size(); ++e)
      EXPECT_DOUBLE_EQ(r.expert_load[l][e], counts[l][e] / active) << l << " " << e;
  }
  EXPECT_EQ(j["layer_sparsity"].size(), counts.size());
  EXPECT_EQ(j["expert_load"][0].size(), size_t(c.model.experts()));
  expect_contains(r.line(), "sparsity per layer ");

  EvalOptions o;
  o.text = write_text_file(dir, "other.txt", 100);
  o.batches = 2;
  const EvalResult t = evaluate_checkpoint(dir.file("run"), o);
  const Corpus other = load_text(o.text, 0.0);
  EXPECT_EQ(t.loss, expected_loss(m, other.train, 0, c, 2));
  EXPECT_NE(t.loss, r.loss);
  EXPECT_EQ(t.split, "all");
  EXPECT_EQ(t.text, o.text);
}

TEST(Eval, DumpLogitsWritesTheFirstWindowAndASidecar) {
  TempDir dir;
  TrainConfig c = tiny(model::FfnKind::moe, model::RouterKind::topk);
  const model::Transformer m = save_run(c, dir.file("run"));
  EvalOptions o;
  o.text = write_text_file(dir, "t.txt", 200);
  o.dump_logits = dir.file("logits.bin");
  evaluate_checkpoint(dir.file("run"), o);

  const std::string raw = read_file(o.dump_logits);
  ASSERT_EQ(raw.size(), size_t(8 * 256 * 4));
  std::vector<float> dumped(8 * 256);
  std::memcpy(dumped.data(), raw.data(), raw.size());
  // The same window alone through the model: its logits do not depend on the other window of
  // the batch (causal attention within a sequence, per-token routing).
  const Corpus corpus = load_text(o.text, 0.0);
  const Batch b = fixed_batch(corpus.train, 0, 200, 8, 2, 0, c.eval_batches);
  const std::vector<int32_t> all = b.inputs.to_vector<int32_t>();
  const std::vector<int32_t> first(all.begin(), all.begin() + 8);
  NoGradGuard no_grad;
  const Tensor logits = m.forward(Tensor::from_vector<int32_t>({8}, first), 1, 8, 0.0).logits;
  EXPECT_TRUE(test::all_close(std::vector<double>(dumped.begin(), dumped.end()),
                              test::values(logits), 1e-6, 1e-5));

  const nlohmann::json side = read_json(o.dump_logits + ".json");
  EXPECT_EQ(side["shape"], nlohmann::json::array({8, 256}));
  EXPECT_EQ(side["dtype"], "float32");
  EXPECT_EQ(side["input_ids"].get<std::vector<int32_t>>(), first);
  EXPECT_EQ(side["step"], 5);
}

TEST(Eval, BadInputsAreErrorsNamingTheProblem) {
  TempDir dir;
  TrainConfig c = tiny(model::FfnKind::dense, model::RouterKind::relu);
  c.val_fraction = 0;
  save_run(c, dir.file("run"));
  expect_contains(error_of([&] { evaluate_checkpoint(dir.file("run"), {}); }),
                  "no validation split (data.val_fraction = 0); pass --text FILE");
  EvalOptions o;
  o.text = dir.file("missing.txt");
  expect_contains(error_of([&] { evaluate_checkpoint(dir.file("run"), o); }), "missing.txt");
  o.text = write_text_file(dir, "short.txt", 5);
  expect_contains(error_of([&] { evaluate_checkpoint(dir.file("run"), o); }),
                  "longer than the data");
  o.text = write_text_file(dir, "ok.txt", 50);
  o.batches = -1;
  expect_contains(error_of([&] { evaluate_checkpoint(dir.file("run"), o); }),
                  "batches must be at least 1");
  o.batches = 1;
  o.dump_logits = dir.file("no/such/dir/logits.bin");
  expect_contains(error_of([&] { evaluate_checkpoint(dir.file("run"), o); }),
                  "cannot write --dump-logits");
}

}  // namespace
}  // namespace remoe::train
