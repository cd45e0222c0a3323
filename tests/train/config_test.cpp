#include "train/config.h"

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "autodiff/device.h"
#include "tests/test_util.h"

namespace remoe::train {
namespace {

using test::error_of;

// The smallest valid file: everything else takes its default.
::testing::AssertionResult has(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

constexpr const char* kMinimal = "[data]\npath = \"corpus.txt\"\n";

TrainConfig parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return parse_config(text, "test.toml", overrides);
}

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse(text, overrides); });
}

TEST(Config, FullFileParsesToTheGivenValues) {
  const TrainConfig c = parse(R"(
[model]
vocab_size = 300
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
d_ffn = 128
norm_eps = 1e-6
rope_base = 10000
init_std = 0.02
ffn = "moe"
router = "topk"
n_experts = 16
top_k = 2
granularity = 2
l1 = "plain"
aux_coeff = 0.001
renormalize = true

[data]
path = "/tmp/text.txt"
val_fraction = 0.05

[train]
seed = 42
steps = 500
batch_size = 4
seq_len = 128
grad_accum = 3

[optim]
lr = 1e-3
min_lr = 1e-4
warmup_steps = 20
weight_decay = 0.1
beta1 = 0.85
beta2 = 0.95
eps = 1e-10
grad_clip = 0.5

[remoe]
lambda0 = 1e-6
alpha = 1.5

[eval]
every = 50
batches = 2

[checkpoint]
every = 250

[log]
run_dir = "runs/x"
every = 10
)");
  const model::ModelConfig& m = c.model;
  EXPECT_EQ(m.vocab_size, 300);
  EXPECT_EQ(m.d_model, 64);
  EXPECT_EQ(m.n_layers, 2);
  EXPECT_EQ(m.n_heads, 4);
  EXPECT_EQ(m.n_kv_heads, 2);
  EXPECT_EQ(m.d_ffn, 128);
  EXPECT_EQ(m.norm_eps, 1e-6);
  EXPECT_EQ(m.rope_base, 10000.0);  // an integer where a float is expected
  EXPECT_EQ(m.init_std, 0.02);
  EXPECT_EQ(m.ffn, model::FfnKind::moe);
  EXPECT_EQ(m.router, model::RouterKind::topk);
  EXPECT_EQ(m.n_experts, 16);
  EXPECT_EQ(m.top_k, 2);
  EXPECT_EQ(m.granularity, 2);
  EXPECT_EQ(m.l1, model::L1Kind::plain);
  EXPECT_EQ(m.aux_coeff, 0.001);
  EXPECT_TRUE(m.renormalize);
  EXPECT_EQ(c.data_path, "/tmp/text.txt");
  EXPECT_EQ(c.val_fraction, 0.05);
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.steps, 500);
  EXPECT_EQ(c.batch_size, 4);
  EXPECT_EQ(c.seq_len, 128);
  EXPECT_EQ(c.grad_accum, 3);
  EXPECT_EQ(c.lr, 1e-3);
  EXPECT_EQ(c.min_lr, 1e-4);
  EXPECT_EQ(c.warmup_steps, 20);
  EXPECT_EQ(c.weight_decay, 0.1);
  EXPECT_EQ(c.beta1, 0.85);
  EXPECT_EQ(c.beta2, 0.95);
  EXPECT_EQ(c.eps, 1e-10);
  EXPECT_EQ(c.grad_clip, 0.5);
  EXPECT_EQ(c.lambda0, 1e-6);
  EXPECT_EQ(c.alpha, 1.5);
  EXPECT_EQ(c.eval_every, 50);
  EXPECT_EQ(c.eval_batches, 2);
  EXPECT_EQ(c.checkpoint_every, 250);
  EXPECT_EQ(c.run_dir, "runs/x");
  EXPECT_EQ(c.log_every, 10);
}

TEST(Config, EnumValuesMapToTheirEnumerators) {
  const TrainConfig c =
      parse(std::string(kMinimal) +
            "[model]\nffn = \"dense\"\nrouter = \"relu\"\nl1 = \"load_balanced\"\n");
  EXPECT_EQ(c.model.ffn, model::FfnKind::dense);
  EXPECT_EQ(c.model.router, model::RouterKind::relu);
  EXPECT_EQ(c.model.l1, model::L1Kind::load_balanced);
}

// train.device and train.precision: parsed; "cuda" where no GPU can be used is refused saying
// why; "auto" takes the GPU only when one is visible, and bf16 only on the GPU.
TEST(Config, TrainDeviceAndPrecisionChoices) {
  EXPECT_EQ(parse(kMinimal).device, DeviceChoice::auto_);
  EXPECT_EQ(parse(std::string(kMinimal) + "[train]\ndevice = \"cpu\"\n").device, DeviceChoice::cpu);
  EXPECT_EQ(parse(kMinimal, {"--train.device=cuda"}).device, DeviceChoice::cuda);
  const std::string bad = parse_error(std::string(kMinimal) + "[train]\ndevice = \"gpu\"\n");
  EXPECT_TRUE(has(bad, "train.device"));
  EXPECT_TRUE(has(bad, "cuda"));
  EXPECT_EQ(resolve_device(DeviceChoice::cpu), Device::cpu);
  EXPECT_EQ(resolve_device(DeviceChoice::auto_),
            device::cuda_available() ? Device::cuda : Device::cpu);
  EXPECT_EQ(resolve_precision(PrecisionChoice::auto_, Device::cpu), model::Precision::f32);
  EXPECT_EQ(resolve_precision(PrecisionChoice::auto_, Device::cuda), model::Precision::bf16);
  EXPECT_EQ(resolve_precision(PrecisionChoice::bf16, Device::cpu), model::Precision::bf16);
  EXPECT_EQ(parse(kMinimal, {"--train.precision=f32"}).precision, PrecisionChoice::f32);
  if (device::cuda_available()) return;
  const std::string msg = error_of([] { resolve_device(DeviceChoice::cuda); });
  EXPECT_TRUE(has(msg, "train.device = \"cuda\""));
  EXPECT_TRUE(has(msg, device::cuda_built() ? "no CUDA device is visible"
                                            : "built without the CUDA backend"));
}

TEST(Config, AbsentKeysKeepTheirDefaults) {
  const TrainConfig c = parse(std::string(kMinimal) + "[train]\nsteps = 7\n");
  TrainConfig expected;
  expected.data_path = "corpus.txt";
  expected.steps = 7;
  EXPECT_EQ(to_toml(c), to_toml(expected));
  EXPECT_EQ(c.model.d_model, 768);
  EXPECT_EQ(c.lr, 5e-4);
  EXPECT_EQ(c.run_dir, "runs/default");
}

TEST(Config, OverridesWinOverTheFile) {
  const TrainConfig c = parse(std::string(kMinimal) + "[train]\nsteps = 7\n[optim]\nlr = 0.1\n",
                              {"--train.steps=9", "optim.lr=1e-8", "--optim.min_lr=0",
                               "--model.ffn=dense", "--model.renormalize=true",
                               "--data.path=other.txt", "--log.run_dir=a=b", "--train.steps=11"});
  EXPECT_EQ(c.steps, 11);  // the last override wins
  EXPECT_EQ(c.lr, 1e-8);
  EXPECT_EQ(c.model.ffn, model::FfnKind::dense);
  EXPECT_TRUE(c.model.renormalize);
  EXPECT_EQ(c.data_path, "other.txt");
  EXPECT_EQ(c.run_dir, "a=b");  // only the first '=' separates
}

TEST(Config, OverridesAreTypeChecked) {
  auto e = parse_error(kMinimal, {"--model.d_model=abc"});
  EXPECT_TRUE(has(e, "command line"));
  EXPECT_TRUE(has(e, "--model.d_model=abc"));
  EXPECT_TRUE(has(e, "expected an integer"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--model.d_model=64.5"}), "expected an integer"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--model.d_model=64x"}), "expected an integer"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--model.d_model="}), "expected an integer"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--optim.lr=fast"}), "expected a number"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--optim.lr=1e-3x"}), "expected a number"));
  EXPECT_TRUE(
      has(parse_error(kMinimal, {"--model.renormalize=1"}), "expected a boolean (true or false)"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--train.seed=-3"}), "expected a non-negative integer"));
  e = parse_error(kMinimal, {"--model.router=softmax"});
  EXPECT_TRUE(has(e, "--model.router=softmax"));
  EXPECT_TRUE(has(e, "\"relu\", \"topk\""));
  // Well-formed numbers in every accepted spelling.
  const TrainConfig c = parse(kMinimal, {"--optim.warmup_steps=-1", "--optim.eps=1E-9",
                                         "--model.d_model=+96", "--remoe.alpha=2"});
  EXPECT_EQ(c.warmup_steps, -1);
  EXPECT_EQ(c.eps, 1e-9);
  EXPECT_EQ(c.model.d_model, 96);
  EXPECT_EQ(c.alpha, 2.0);
}

TEST(Config, StringOverridesMustBeUtf8) {
  // Every string value ends up in config.toml and state.json, which hold only UTF-8.
  const TrainConfig c = parse(kMinimal, {"--log.run_dir=runs/été 日本 \xf0\x9f\x98\x80"});
  EXPECT_EQ(c.run_dir, "runs/été 日本 \xf0\x9f\x98\x80");
  for (const char* bad : {"\xff", "a\xe2\x82", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                          "\x80"}) {
    SCOPED_TRACE(testing::PrintToString(std::string(bad)));
    const std::string e = parse_error(kMinimal, {std::string("--log.run_dir=") + bad});
    EXPECT_TRUE(has(e, "command line: --log.run_dir="));
    EXPECT_TRUE(has(e, "expected UTF-8 text for log.run_dir"));
  }
  EXPECT_TRUE(
      has(parse_error(kMinimal, {"--data.path=x\xfe"}), "expected UTF-8 text for data.path"));
}

TEST(Config, MalformedOverrides) {
  auto e = parse_error(kMinimal, {"--train.steps"});
  EXPECT_TRUE(has(e, "command line"));
  EXPECT_TRUE(has(e, "'--train.steps' has no '='"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--=4"}), "'--=4' has no key"));
  e = parse_error(kMinimal, {"--model.n_expert=4"});
  EXPECT_TRUE(has(e, "command line"));
  EXPECT_TRUE(has(e, "unknown key 'model.n_expert' (did you mean 'model.n_experts'?)"));
}

TEST(Config, UnknownKeySuggestsTheNearest) {
  EXPECT_EQ(parse_error(std::string(kMinimal) + "[model]\nn_expert = 4\n"),
            "test.toml: unknown key 'model.n_expert' (did you mean 'model.n_experts'?)");
  EXPECT_EQ(parse_error(std::string(kMinimal) + "[modle]\nd_model = 64\n"),
            "test.toml: unknown key 'modle.d_model' (did you mean 'model.d_model'?)");
  EXPECT_EQ(parse_error(std::string(kMinimal) + "[optimizer]\nlr = 0.1\n"),
            "test.toml: unknown key 'optimizer.lr' (did you mean 'optim.lr'?)");
  // A key outside any section is matched against the keys' own names.
  EXPECT_TRUE(has(parse_error(std::string("steps = 3\n") + kMinimal),
                  "unknown key 'steps' (did you mean 'train.steps'?)"));
  // Nothing close: the section's keys, or the sections, are listed.
  auto e = parse_error(std::string(kMinimal) + "[model]\nzzzzzzzzzz = 1\n");
  EXPECT_TRUE(has(e, "unknown key 'model.zzzzzzzzzz'"));
  EXPECT_TRUE(has(e, "keys of [model]:"));
  EXPECT_TRUE(has(e, "n_kv_heads"));
  e = parse_error(std::string(kMinimal) + "[zzzzzzzzzz]\nqqqqqqqqqq = 1\n");
  EXPECT_TRUE(has(e, "unknown section [zzzzzzzzzz]"));
  EXPECT_TRUE(has(e, "[remoe]"));
  // An empty unknown section is still an error.
  EXPECT_EQ(parse_error(std::string(kMinimal) + "[modle]\n"),
            "test.toml: unknown section [modle] (did you mean [model]?)");
}

TEST(Config, WrongTypesNameTheKeyTheValueAndTheExpectedType) {
  const std::string base = kMinimal;
  EXPECT_EQ(parse_error(base + "[model]\nd_model = \"8\"\n"),
            "test.toml: model.d_model = \"8\": expected an integer, got a string");
  EXPECT_EQ(parse_error(base + "[model]\nd_model = 8.0\n"),
            "test.toml: model.d_model = 8.0: expected an integer, got a float");
  EXPECT_EQ(parse_error(base + "[log]\nrun_dir = true\n"),
            "test.toml: log.run_dir = true: expected a string, got a boolean");
  EXPECT_EQ(parse_error(base + "[model]\nrenormalize = 1\n"),
            "test.toml: model.renormalize = 1: expected a boolean (true or false), got an integer");
  EXPECT_EQ(parse_error(base + "[optim]\nlr = \"1e-3\"\n"),
            "test.toml: optim.lr = \"1e-3\": expected a number, got a string");
  EXPECT_TRUE(has(parse_error(base + "[train]\nsteps = [1, 2]\n"),
                  "train.steps = [ 1, 2 ]: expected an integer, got an array"));
  EXPECT_TRUE(has(parse_error(base + "[train]\nseed = -1\n"),
                  "train.seed = -1: expected a non-negative integer"));
  EXPECT_TRUE(has(parse_error(base + "[model]\nffn = 1\n"),
                  "model.ffn = 1: expected one of \"dense\", \"moe\", got an integer"));
}

TEST(Config, StructureDeeperThanSectionKeyIsRejected) {
  EXPECT_TRUE(has(parse_error(std::string(kMinimal) + "[model.attention]\nheads = 4\n"),
                  "'model.attention' is a table, but options are only one level deep"));
  EXPECT_TRUE(has(parse_error(std::string(kMinimal) + "[model]\nd_model = { x = 1 }\n"),
                  "'model.d_model' is a table"));
  EXPECT_TRUE(has(parse_error(std::string("model = 5\n") + kMinimal),
                  "test.toml: 'model' must be a table ([model]), got an integer"));
  EXPECT_TRUE(has(parse_error(std::string(kMinimal) + "[[train]]\nsteps = 1\n"),
                  "'train' must be a table ([train]), got an array"));
}

TEST(Config, BadEnumValueListsTheAllowedOnes) {
  EXPECT_EQ(parse_error(std::string(kMinimal) + "[model]\nl1 = \"l2\"\n"),
            "test.toml: model.l1 = \"l2\": expected one of \"load_balanced\", \"plain\"");
  EXPECT_TRUE(has(parse_error(std::string(kMinimal) + "[model]\nffn = \"Dense\"\n"),
                  "expected one of \"dense\", \"moe\""));
}

TEST(Config, TomlSyntaxErrorNamesTheLine) {
  const std::string e = parse_error(std::string(kMinimal) + "[train]\nsteps = = 3\n");
  EXPECT_TRUE(has(e, "test.toml: TOML syntax error at line 4, column"));
  EXPECT_TRUE(has(parse_error("[model]\nd_model = 64\nd_model = 65\n"),
                  "TOML syntax error at line 3"));  // TOML forbids redefinition
}

TEST(Config, ValidateRejectsInconsistentValues) {
  auto e = parse_error(std::string(kMinimal) + "[model]\nn_experts = 8\ntop_k = 9\n");
  EXPECT_TRUE(has(e, "model.top_k = 9"));
  EXPECT_TRUE(has(e, "n_experts = 8"));
  e = parse_error(std::string(kMinimal) + "[model]\nd_model = 100\nn_heads = 12\n");
  EXPECT_TRUE(has(e, "model.d_model = 100 is not divisible by model.n_heads = 12"));
  EXPECT_TRUE(has(parse_error("[train]\nsteps = 3\n"), "data.path is required"));
  EXPECT_TRUE(
      has(parse_error(kMinimal, {"--train.steps=0"}), "train.steps must be at least 1, got 0"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--train.steps=0"}), "command-line overrides"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--optim.min_lr=0.1"}),
                  "optim.min_lr must be in [0, optim.lr = 0.0005], got 0.1"));
  EXPECT_TRUE(
      has(parse_error(kMinimal, {"--remoe.alpha=1"}), "remoe.alpha must be greater than 1, got 1"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--remoe.lambda0=0"}), "remoe.lambda0"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--optim.lr=nan"}), "optim.lr"));
  EXPECT_TRUE(
      has(parse_error(kMinimal, {"--optim.beta2=1"}), "optim.beta2 must be in [0, 1), got 1"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--optim.warmup_steps=-2"}), "optim.warmup_steps"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--data.val_fraction=1"}),
                  "data.val_fraction must be in [0, 1), got 1"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--eval.batches=0"}), "eval.batches"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--log.every=0"}), "log.every"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--log.run_dir="}), "log.run_dir"));

  // The expert counts are products: each must fit 64 bits, whatever the FFN kind (the trainer
  // computes the target sparsity from them).
  e = parse_error(std::string(kMinimal) +
                  "[model]\nn_experts = 4611686018427387904\ngranularity = 4\nd_ffn = 4096\n");
  EXPECT_TRUE(has(e, "n_experts = 4611686018427387904 or top_k = 1 times granularity = 4"));
  EXPECT_TRUE(has(e, "overflows a 64-bit integer"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--model.ffn=dense", "--model.top_k=-9223372036854775807",
                                         "--model.granularity=2"}),
                  "overflows a 64-bit integer"));

  TrainConfig c;
  c.data_path = "x";
  EXPECT_NO_THROW(c.validate());
  c.grad_clip = -1;
  EXPECT_TRUE(has(error_of([&] { c.validate(); }), "optim.grad_clip"));
}

TEST(Config, RetentionAndSkipKeys) {
  const TrainConfig d;
  EXPECT_EQ(d.keep_last, 3);
  EXPECT_EQ(d.keep_every, 0);
  EXPECT_EQ(d.max_skips, 5);
  const TrainConfig c = parse_config(
      std::string(kMinimal) + "[checkpoint]\nkeep_last = 1\nkeep_every = 1000\n",
      "t.toml", {"--train.max_skips=2"});
  EXPECT_EQ(c.keep_last, 1);
  EXPECT_EQ(c.keep_every, 1000);
  EXPECT_EQ(c.max_skips, 2);
  EXPECT_TRUE(has(parse_error(kMinimal, {"--checkpoint.keep_last=0"}),
                  "checkpoint.keep_last must be at least 1, got 0"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--checkpoint.keep_every=-1"}),
                  "checkpoint.keep_every must be >= 0 (0: none), got -1"));
  EXPECT_TRUE(has(parse_error(kMinimal, {"--train.max_skips=0"}),
                  "train.max_skips must be at least 1, got 0"));
}

TEST(Config, ConfigDifferencesListsEveryDifferingKeyWithBothValues) {
  TrainConfig a;
  a.data_path = "d";
  EXPECT_TRUE(config_differences(a, a).empty());
  TrainConfig b = a;
  b.model.d_model = 64;
  b.model.router = model::RouterKind::topk;
  b.data_path = "e";
  b.lr = 1e-3;
  b.keep_last = 7;
  const auto d = config_differences(a, b);
  ASSERT_EQ(d.size(), 5u);
  const std::vector<std::array<std::string, 3>> expected = {
      {"model.d_model", "768", "64"},
      {"model.router", "\"relu\"", "\"topk\""},
      {"data.path", "\"d\"", "\"e\""},
      {"optim.lr", "5e-04", "0.001"},
      {"checkpoint.keep_last", "3", "7"}};
  for (size_t i = 0; i < d.size(); ++i) {
    EXPECT_EQ(d[i].key, expected[i][0]);
    EXPECT_EQ(d[i].a, expected[i][1]);
    EXPECT_EQ(d[i].b, expected[i][2]);
  }
}

// Values that stress the formatting: tiny, non-default, integer-valued floats, escapes.
TrainConfig unusual_config() {
  TrainConfig c;
  c.data_path = "C:\\data\\\"quoted\" text\twith\ttabs\nand a newline \x01 \x7f ü.txt";
  c.run_dir = "runs/'single' and \"double\"";
  c.model.ffn = model::FfnKind::dense;
  c.model.router = model::RouterKind::topk;
  c.model.l1 = model::L1Kind::plain;
  c.model.renormalize = true;
  c.model.aux_coeff = 0.01;
  c.model.rope_base = 1e6;
  c.model.init_std = 0.1 + 0.2;
  c.model.norm_eps = 4.9406564584124654e-324;  // the smallest subnormal
  c.lambda0 = 1e-8;
  c.alpha = 1.0 + 1e-15;
  c.lr = 3.0;  // integer-valued: must still be written as a float
  c.min_lr = 0;
  c.grad_clip = 1e300;
  c.seed = 9223372036854775807ull;
  c.warmup_steps = -1;
  c.val_fraction = 1.0 / 3.0;
  return c;
}

TEST(Config, ToTomlRoundTripsExactly) {
  for (const TrainConfig& original : {unusual_config(), [] {
                                        TrainConfig c;
                                        c.data_path = "d";
                                        return c;
                                      }()}) {
    const std::string text = to_toml(original);
    const TrainConfig back = parse_config(text, "to_toml", {});
    EXPECT_EQ(to_toml(back), text);
    EXPECT_EQ(back.data_path, original.data_path);
    EXPECT_EQ(back.run_dir, original.run_dir);
    EXPECT_EQ(back.model.ffn, original.model.ffn);
    EXPECT_EQ(back.model.router, original.model.router);
    EXPECT_EQ(back.model.l1, original.model.l1);
    EXPECT_EQ(back.model.renormalize, original.model.renormalize);
    EXPECT_EQ(back.model.aux_coeff, original.model.aux_coeff);
    EXPECT_EQ(back.model.rope_base, original.model.rope_base);
    EXPECT_EQ(back.model.init_std, original.model.init_std);
    EXPECT_EQ(back.model.norm_eps, original.model.norm_eps);
    EXPECT_EQ(back.lambda0, original.lambda0);
    EXPECT_EQ(back.alpha, original.alpha);
    EXPECT_EQ(back.lr, original.lr);
    EXPECT_EQ(back.min_lr, original.min_lr);
    EXPECT_EQ(back.grad_clip, original.grad_clip);
    EXPECT_EQ(back.seed, original.seed);
    EXPECT_EQ(back.warmup_steps, original.warmup_steps);
    EXPECT_EQ(back.val_fraction, original.val_fraction);
  }
}

TEST(Config, ToTomlWritesEveryKeyResolved) {
  const std::string text = to_toml(unusual_config());
  EXPECT_TRUE(has(text, "[model]\nvocab_size = 256\nd_model = 768\n"));
  EXPECT_TRUE(has(text, "\nlr = 3.0\n"));
  EXPECT_TRUE(has(text, "\nmin_lr = 0.0\n"));
  EXPECT_TRUE(has(text, "\nlambda0 = 1e-08\n"));
  EXPECT_TRUE(has(text, "\naux_coeff = 0.01\n"));
  EXPECT_TRUE(has(text, "\nffn = \"dense\"\n"));
  EXPECT_TRUE(has(text, "\nrenormalize = true\n"));
  EXPECT_TRUE(has(text, "[eval]\nevery = 100\nbatches = 8\n"));
  EXPECT_TRUE(has(text, "[checkpoint]\nevery = 0\n"));
  EXPECT_TRUE(has(text, "\nrun_dir = \"runs/'single' and \\\"double\\\"\"\n"));
}

// (section, key) of every `key = value` line of a to_toml text.
std::vector<std::string> keys_of(const std::string& toml_text) {
  std::vector<std::string> keys;
  std::istringstream in(toml_text);
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.front() == '[') {
      section = line.substr(1, line.find(']') - 1);
    } else {
      keys.push_back(section + "." + line.substr(0, line.find(" = ")));
    }
  }
  return keys;
}

TEST(Config, OptionsHelpListsEveryKeyThatToTomlWrites) {
  const std::string help = options_help();
  EXPECT_TRUE(has(help, "--model.d_model=INT"));
  EXPECT_TRUE(has(help, "(default 768)"));
  EXPECT_TRUE(has(help, "width of the residual stream"));
  EXPECT_TRUE(has(help, "--model.ffn=dense|moe"));
  EXPECT_TRUE(has(help, "--model.l1=load_balanced|plain"));
  EXPECT_TRUE(has(help, "--remoe.lambda0=FLOAT"));
  EXPECT_TRUE(has(help, "(default 1e-08)"));
  EXPECT_TRUE(has(help, "--model.renormalize=BOOL"));
  EXPECT_TRUE(has(help, "--log.run_dir=STRING"));
  EXPECT_TRUE(has(help, "(default \"runs/default\")"));
  EXPECT_TRUE(has(help, "--data.path=STRING"));

  const std::vector<std::string> keys = keys_of(to_toml(TrainConfig{}));
  // 24 model + 5 data + 8 train + 8 optim + 2 remoe + 2 eval + 3 checkpoint + 3 dist + 3 log
  EXPECT_EQ(keys.size(), 58u);
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());
  size_t lines = 0;
  for (const std::string& k : keys) {
    EXPECT_TRUE(has(help, "  --" + k + "=")) << k;
    ++lines;
  }
  // One line per key: the help lists nothing the parser would not accept (the Megatron
  // aliases after it are checked in cli_test.cpp).
  const std::string options = help.substr(0, help.find("\nMegatron-LM"));
  EXPECT_EQ(static_cast<size_t>(std::count(options.begin(), options.end(), '\n')), lines + 1);
  for (const char* k :
       {"model.n_kv_heads", "data.val_fraction", "train.grad_accum", "optim.grad_clip",
        "remoe.alpha", "eval.every", "eval.batches", "checkpoint.every", "log.every"})
    EXPECT_NE(std::find(keys.begin(), keys.end(), k), keys.end()) << k;
}

TEST(Config, LoadConfigReadsTheFileAndNamesItInErrors) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("remoe_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "run.toml").string();
  { std::ofstream(path) << kMinimal << "[train]\nsteps = 12\n[model]\nd_model = \"wide\"\n"; }
  EXPECT_EQ(error_of([&] { load_config(path, {}); }),
            path + ": model.d_model = \"wide\": expected an integer, got a string");
  { std::ofstream(path) << kMinimal << "[train]\nsteps = 12\n[model]\nd_model = 96\n"; }
  const TrainConfig c = load_config(path, {"--model.d_model=48"});
  EXPECT_EQ(c.steps, 12);
  EXPECT_EQ(c.model.d_model, 48);

  const std::string missing = (dir / "missing.toml").string();
  EXPECT_TRUE(has(error_of([&] { load_config(missing, {}); }),
                  "config file '" + missing + "' does not exist"));
  EXPECT_TRUE(has(error_of([&] { load_config(dir.string(), {}); }), "is not a regular file"));
  std::filesystem::remove_all(dir);
}

TEST(Config, TensorboardIsOffUnlessAskedForAndTakesOnlyABoolean) {
  EXPECT_FALSE(parse(kMinimal).tensorboard);
  EXPECT_TRUE(parse(std::string(kMinimal) + "[log]\ntensorboard = true\n").tensorboard);
  EXPECT_TRUE(parse(kMinimal, {"--log.tensorboard=true"}).tensorboard);
  EXPECT_EQ(parse_error(std::string(kMinimal) + "[log]\ntensorboard = \"yes\"\n"),
            "test.toml: log.tensorboard = \"yes\": expected a boolean (true or false), got a string");
  EXPECT_TRUE(has(parse_error(kMinimal, {"--log.tensorboard=1"}), "expected a boolean"));
  EXPECT_TRUE(has(to_toml(parse(kMinimal)), "\ntensorboard = false\n"));
}

}  // namespace
}  // namespace remoe::train

namespace remoe::train {
namespace {

// The router options: parsed, round-tripped through to_toml, reachable by their Megatron-LM
// flags, and refused with the key, the value and what is expected.
TEST(RouterConfig, KeysParseRoundTripAndHaveMegatronFlags) {
  const TrainConfig c = parse(
      std::string(kMinimal) +
      "[model]\nrouter = \"topk\"\ncapacity_factor = 1.25\ndrop_policy = \"position\"\n"
      "z_loss_coeff = 1e-3\nexpert_bias = true\nbias_update_rate = 0.01\nk_warm = 4\n"
      "warm_steps = 20\n");
  EXPECT_EQ(c.model.capacity_factor, 1.25);
  EXPECT_EQ(c.model.drop_policy, model::DropPolicy::position);
  EXPECT_EQ(c.model.z_loss_coeff, 1e-3);
  EXPECT_TRUE(c.model.expert_bias);
  EXPECT_EQ(c.model.bias_update_rate, 0.01);
  EXPECT_EQ(c.model.k_warm, 4);
  EXPECT_EQ(c.model.warm_steps, 20);
  EXPECT_TRUE(config_differences(parse_config(to_toml(c), "round trip", {}), c).empty());

  const TrainConfig m = parse(kMinimal, {"--model.router=topk", "--moe-expert-capacity-factor=2",
                                         "--moe-token-drop-policy=probs", "--moe-z-loss-coeff=0.001",
                                         "--moe-router-enable-expert-bias",
                                         "--moe-router-bias-update-rate=0.002"});
  EXPECT_EQ(m.model.capacity_factor, 2.0);
  EXPECT_EQ(m.model.drop_policy, model::DropPolicy::probs);
  EXPECT_EQ(m.model.z_loss_coeff, 0.001);
  EXPECT_TRUE(m.model.expert_bias);
  EXPECT_EQ(m.model.bias_update_rate, 0.002);
  for (const char* r : {"expert_choice", "hash"})
    EXPECT_EQ(parse(kMinimal, {std::string("--model.router=") + r}).model.router,
              r == std::string("hash") ? model::RouterKind::hash : model::RouterKind::expert_choice);
}

TEST(RouterConfig, BadValuesNameTheKeyTheValueAndWhatIsExpected) {
  const auto err = [](std::vector<std::string> o) { return parse_error(kMinimal, o); };
  EXPECT_TRUE(has(err({"--model.capacity_factor=-1"}),
                  "model.capacity_factor must be >= 0 and finite (0: dropless), got -1"));
  EXPECT_TRUE(has(err({"--model.capacity_factor=1.5"}),
                  "model.capacity_factor = 1.5 applies to model.router = \"topk\" or "
                  "\"expert_choice\", got \"relu\""));
  EXPECT_TRUE(has(err({"--model.drop_policy=random"}), "one of \"probs\", \"position\""));
  EXPECT_TRUE(has(err({"--model.z_loss_coeff=-0.1"}), "model.z_loss_coeff must be >= 0"));
  EXPECT_TRUE(has(err({"--model.router=hash", "--model.z_loss_coeff=0.1"}),
                  "model.z_loss_coeff = 0.1 needs router logits, but model.router = \"hash\""));
  EXPECT_TRUE(has(err({"--model.expert_bias=true"}),
                  "model.expert_bias = true needs model.router = \"topk\", got \"relu\""));
  EXPECT_TRUE(has(err({"--model.router=topk", "--model.bias_update_rate=-1"}),
                  "model.bias_update_rate must be >= 0 and finite, got -1"));
  EXPECT_TRUE(has(err({"--model.router=topk", "--model.k_warm=9"}),
                  "model.k_warm = 9 must be in [0, n_experts = 8]"));
  EXPECT_TRUE(has(err({"--model.k_warm=4"}), "model.k_warm = 4 (a near-dense warm-up) needs "
                                             "model.router = \"topk\", got \"relu\""));
  EXPECT_TRUE(has(err({"--model.router=topk", "--model.top_k=2", "--model.k_warm=1"}),
                  "model.k_warm = 1 must be at least model.top_k = 2"));
  EXPECT_TRUE(has(err({"--model.router=topk", "--model.warm_steps=-3"}),
                  "model.warm_steps must be >= 0, got -3"));
  EXPECT_TRUE(has(err({"--model.router=sinkhorn"}),
                  "one of \"relu\", \"topk\", \"expert_choice\", \"hash\""));
}

}  // namespace
}  // namespace remoe::train
