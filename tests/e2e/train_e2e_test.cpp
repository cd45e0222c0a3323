// Real training runs on ../shared/data/tinyshakespeare.txt (the test runs from the source root):
// short runs of each FFN kind, resume, the tiny config's acceptance (beats a count-based bigram
// model; ReMoE's sparsity reaches 1 − k/E), bad input through the `remoe` binary, and the
// binary in trouble: SIGTERM, kill -9 in the middle of a checkpoint, a diverging run.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data.h"
#include "train/sample.h"
#include "train/trainer.h"

namespace remoe::test {
namespace {

namespace fs = std::filesystem;
const char* const kShakespeare = "../shared/data/tinyshakespeare.txt";

std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("remoe_e2e_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir.string();
}

train::TrainConfig small_run(const std::string& name, model::FfnKind ffn, model::RouterKind router) {
  train::TrainConfig c;
  c.model.d_model = 32;
  c.model.n_layers = 2;
  c.model.n_heads = 2;
  c.model.n_kv_heads = 1;
  c.model.d_ffn = 64;
  c.model.ffn = ffn;
  c.model.router = router;
  c.model.n_experts = 4;
  c.model.top_k = 1;
  c.model.init_std = 0.02;
  c.data_path = kShakespeare;
  c.steps = 16;
  c.batch_size = 4;
  c.seq_len = 32;
  c.lr = 3e-3;
  c.min_lr = 3e-4;
  c.warmup_steps = 2;
  c.eval_every = 8;
  c.eval_batches = 2;
  c.log_every = 100;
  c.run_dir = fresh_dir(name);
  return c;
}

class ShortRun : public ::testing::TestWithParam<std::pair<model::FfnKind, model::RouterKind>> {
 protected:
  void SetUp() override {
    if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  }
};

TEST_P(ShortRun, LearnsAndLogs) {
  const auto [ffn, router] = GetParam();
  const train::TrainConfig c = small_run("short", ffn, router);
  const train::RunResult r = train::run_training(c);
  ASSERT_EQ(r.steps.size(), 16u);
  EXPECT_LT(r.steps.back().loss, r.steps.front().loss - 0.5) << "16 steps at lr 3e-3 should cut the loss";
  EXPECT_LT(r.final_val_loss, std::log(256.0));
  // One JSON line per step, with λ and, for MoE, per-layer sparsity and expert load.
  std::ifstream in(fs::path(c.run_dir) / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    ++lines;
    EXPECT_EQ(j.at("step").get<int>(), lines);
    EXPECT_TRUE(j.contains("lambda"));
    EXPECT_FALSE(j.contains("gpu_memory_peak")) << "a CPU run";
    // The step's time by phase (keys in JSON's sorted order), inside the step's wall time.
    const auto& phases = j.at("phase_ms");
    std::vector<std::string> names;
    double phase_ms = 0;
    for (const auto& [name, ms] : phases.items()) {
      names.push_back(name);
      EXPECT_GE(ms.get<double>(), 0.0) << name;
      phase_ms += ms.get<double>();
    }
    EXPECT_EQ(names, (std::vector<std::string>{"backward", "data", "forward", "optimizer"}));
    EXPECT_GT(phases.at("forward").get<double>(), 0.0);
    EXPECT_GT(phases.at("backward").get<double>(), 0.0);
    const double step_ms = 1e3 * double(c.batch_size * c.seq_len * c.grad_accum) /
                           j.at("tokens_per_s").get<double>();
    EXPECT_LE(phase_ms, step_ms * 1.001) << "the phases are parts of the step";
    if (ffn == model::FfnKind::moe) {
      ASSERT_EQ(j.at("layer_sparsity").size(), 2u);
      ASSERT_EQ(j.at("expert_load").size(), 2u);
      double load = 0;
      for (double v : j.at("expert_load")[0]) load += v;
      EXPECT_NEAR(load, 1.0, 1e-9);
    }
  }
  EXPECT_EQ(lines, 16);
  EXPECT_TRUE(fs::exists(fs::path(c.run_dir) / "config.toml"));
  EXPECT_TRUE(fs::exists(fs::path(c.run_dir) / "checkpoints" / "step_00000016" / "COMPLETE"));
  // Sampling from the run directory: `length` bytes, the same for the same seed.
  train::SampleOptions o;
  o.prompt = "ROMEO:";
  o.length = 40;
  o.seed = 5;
  const std::string a = train::sample_text(c.run_dir, o), b = train::sample_text(c.run_dir, o);
  EXPECT_EQ(a.size(), 40u);
  EXPECT_EQ(a, b);
  o.seed = 6;
  o.top_k = 1;  // greedy: the same whatever the seed
  EXPECT_EQ(train::sample_text(c.run_dir, o), (o.seed = 7, train::sample_text(c.run_dir, o)));
  if (router == model::RouterKind::topk && ffn == model::FfnKind::moe) {
    EXPECT_DOUBLE_EQ(r.steps.back().sparsity, 0.75);  // exactly k of E
  }
  fs::remove_all(c.run_dir);
}

INSTANTIATE_TEST_SUITE_P(Ffn, ShortRun,
                         ::testing::Values(std::pair{model::FfnKind::moe, model::RouterKind::relu},
                                           std::pair{model::FfnKind::moe, model::RouterKind::topk},
                                           std::pair{model::FfnKind::dense, model::RouterKind::relu}));

// Each router and router option of model/README.md trains the small model: the loss falls and
// the metrics carry what the option adds (dropped fraction, z-loss, biases).
struct RouterRunCase {
  const char* name;
  void (*setup)(model::ModelConfig&);
};

std::ostream& operator<<(std::ostream& os, const RouterRunCase& c) { return os << c.name; }

class RouterRun : public ::testing::TestWithParam<RouterRunCase> {
 protected:
  void SetUp() override {
    if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  }
};

TEST_P(RouterRun, LearnsAndLogsItsMetrics) {
  train::TrainConfig c = small_run(std::string("router_") + GetParam().name, model::FfnKind::moe,
                                   model::RouterKind::topk);
  c.eval_every = 0;
  GetParam().setup(c.model);
  const model::ModelConfig& m = c.model;
  const train::RunResult r = train::run_training(c);
  ASSERT_EQ(r.steps.size(), 16u);
  EXPECT_LT(r.steps.back().loss, r.steps.front().loss - 0.5);
  EXPECT_LT(r.final_val_loss, std::log(256.0));
  std::ifstream in(fs::path(c.run_dir) / "metrics.jsonl");
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 16u);
  for (const auto& j : lines) {
    ASSERT_EQ(j.at("expert_load").size(), 2u);
    double load = 0;
    for (double v : j.at("expert_load")[1]) load += v;
    EXPECT_NEAR(load, 1.0, 1e-9);
    const bool capacity = m.router == model::RouterKind::topk && m.capacity_factor > 0;
    EXPECT_EQ(j.contains("dropped_fraction"), capacity);
    if (capacity) {
      for (double f : j.at("dropped_fraction")) EXPECT_TRUE(f >= 0 && f < 1) << f;
    }
    EXPECT_EQ(j.contains("z_loss"), m.z_loss_coeff > 0);
    if (m.z_loss_coeff > 0) {
      EXPECT_GT(j.at("z_loss").get<double>(), 0.0);
      EXPECT_LE(j.at("z_loss").get<double>(), j.at("aux").get<double>() + 1e-12);
    }
    EXPECT_EQ(j.contains("router_bias"), m.expert_bias);
  }
  if (m.expert_bias) {  // zero at the first step, moved by the counts after it
    for (double b : lines.front().at("router_bias")[0]) EXPECT_EQ(b, 0.0);
    double moved = 0;
    for (double b : lines.back().at("router_bias")[0]) moved += std::abs(b);
    EXPECT_GT(moved, 0.0);
  }
  if (m.k_warm > 0) {  // dense during the warm-up, k of E after it
    for (size_t i = 0; i < r.steps.size(); ++i)
      EXPECT_DOUBLE_EQ(r.steps[i].sparsity, int64_t(i) < m.warm_steps ? 0.0 : 0.75) << "step " << i + 1;
  }
  if (m.router == model::RouterKind::expert_choice) {  // C = T·k/E exactly: every expert full
    EXPECT_DOUBLE_EQ(r.steps.back().expert_load[0][0], 0.25);
  }
  fs::remove_all(c.run_dir);
}

INSTANTIATE_TEST_SUITE_P(
    Routers, RouterRun,
    ::testing::Values(
        RouterRunCase{"topk_softmax_after_topk", [](model::ModelConfig& m) { m.renormalize = true; }},
        RouterRunCase{"topk_z_loss", [](model::ModelConfig& m) { m.z_loss_coeff = 1e-3; }},
        RouterRunCase{"topk_capacity_probs",
                      [](model::ModelConfig& m) { m.capacity_factor = 1.0; }},
        RouterRunCase{"topk_capacity_position",
                      [](model::ModelConfig& m) {
                        m.capacity_factor = 1.25;
                        m.drop_policy = model::DropPolicy::position;
                      }},
        RouterRunCase{"topk_expert_bias",
                      [](model::ModelConfig& m) {
                        m.expert_bias = true;
                        m.bias_update_rate = 1e-2;
                      }},
        RouterRunCase{"topk_warmup",
                      [](model::ModelConfig& m) {
                        m.k_warm = 4;
                        m.warm_steps = 4;
                      }},
        RouterRunCase{"expert_choice",
                      [](model::ModelConfig& m) { m.router = model::RouterKind::expert_choice; }},
        RouterRunCase{"hash", [](model::ModelConfig& m) { m.router = model::RouterKind::hash; }},
        RouterRunCase{"relu_plain_l1",
                      [](model::ModelConfig& m) {
                        m.router = model::RouterKind::relu;
                        m.l1 = model::L1Kind::plain;
                      }}),
    ::testing::PrintToStringParamName());

// The expert biases are state: a run that resumes from a checkpoint goes on with the saved
// biases, bit for bit the same as the run that was never interrupted.
TEST(Resume, ExpertBiasesAreRestored) {
  if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  train::TrainConfig straight = small_run("bias_straight", model::FfnKind::moe, model::RouterKind::topk);
  straight.model.expert_bias = true;
  straight.model.bias_update_rate = 1e-2;
  straight.steps = 8;
  straight.eval_every = 0;
  const train::RunResult a = train::run_training(straight);
  train::TrainConfig split = straight;
  split.run_dir = fresh_dir("bias_split");
  split.checkpoint_every = 4;
  struct Crash {};
  EXPECT_THROW(train::run_training(split, [](const train::StepRecord& r) {
                 if (r.step == 5) throw Crash{};
               }),
               Crash);
  const train::RunResult b = train::run_training(split);
  ASSERT_EQ(b.steps.size(), 4u);
  double moved = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(b.steps[i].loss, a.steps[i + 4].loss) << "step " << b.steps[i].step;
    EXPECT_EQ(b.steps[i].router_bias, a.steps[i + 4].router_bias) << "step " << b.steps[i].step;
  }
  for (double v : b.steps.front().router_bias[0]) moved += std::abs(v);
  EXPECT_GT(moved, 0.0) << "the resumed step 5 starts from the biases of 4 updates, not zeros";
  fs::remove_all(straight.run_dir);
  fs::remove_all(split.run_dir);
}

// log.tensorboard: one event file whose TFRecord frames are the file version, the session start
// and one Event per step (tests/train/tensorboard_test.cpp decodes the records themselves).
TEST(Tensorboard, OneEventPerStepBesideTheJsonLines) {
  if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  train::TrainConfig c = small_run("tb", model::FfnKind::moe, model::RouterKind::relu);
  c.steps = 4;
  c.eval_every = 0;
  c.tensorboard = true;
  train::run_training(c);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fs::path(c.run_dir) / "tb")) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_TRUE(files[0].filename().string().starts_with("events.out.tfevents."));
  std::ifstream in(files[0], std::ios::binary);
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t at = 0, records = 0;
  while (at + 12 <= data.size()) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(data[at + size_t(i)]);
    at += 12 + n + 4;
    ++records;
  }
  EXPECT_EQ(at, data.size()) << "the last frame is cut or overruns the file";
  EXPECT_EQ(records, 2u + 4u);
  // The last step's Event carries the per-expert tags of both layers and the validation loss.
  EXPECT_NE(data.rfind("expert_load/layer_1/expert_3"), std::string::npos);
  EXPECT_GT(data.rfind("val_bpb"), data.rfind("expert_load/layer_0/expert_0"));
  fs::remove_all(c.run_dir);
}

TEST(Resume, HalfThenResumeIsBitIdenticalToStraight) {
  if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  train::TrainConfig straight = small_run("straight", model::FfnKind::moe, model::RouterKind::relu);
  straight.steps = 12;
  straight.eval_every = 0;
  const train::RunResult a = train::run_training(straight);

  train::TrainConfig split = straight;
  split.run_dir = fresh_dir("split");
  split.checkpoint_every = 6;
  // A run that dies right after its checkpoint at step 6 (and after the line of step 7 reached
  // metrics.jsonl) ...
  struct Crash {};
  EXPECT_THROW(train::run_training(split, [](const train::StepRecord& r) {
                 if (r.step == 7) throw Crash{};
               }),
               Crash);
  // ... then the same command again: it resumes at step 7 from the checkpoint of step 6.
  const train::RunResult b = train::run_training(split);
  ASSERT_EQ(b.steps.size(), 6u);
  EXPECT_EQ(b.steps.front().step, 7);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(b.steps[i].loss, a.steps[i + 6].loss) << "step " << b.steps[i].step;
    EXPECT_EQ(b.steps[i].lambda, a.steps[i + 6].lambda) << "step " << b.steps[i].step;
  }
  EXPECT_EQ(b.final_lambda, a.final_lambda);
  // The same command once more: the run is complete, nothing is trained or rewritten.
  const train::RunResult again = train::run_training(split);
  EXPECT_TRUE(again.already_complete);
  EXPECT_TRUE(again.steps.empty());
  EXPECT_EQ(again.final_lambda, a.final_lambda);
  // metrics.jsonl holds each step once: the line step 7 wrote before the crash was dropped.
  std::ifstream in(fs::path(split.run_dir) / "metrics.jsonl");
  std::string line;
  int expected_step = 0;
  while (std::getline(in, line)) EXPECT_EQ(nlohmann::json::parse(line).at("step").get<int>(), ++expected_step);
  EXPECT_EQ(expected_step, 12);
  fs::remove_all(straight.run_dir);
  fs::remove_all(split.run_dir);
}

// llm.c shards made from the text by scripts/text_to_shards.py (three training shards, so
// windows straddle shard boundaries) hold the same tokens in the same split: the run on them is
// the run on the text, step for step and bit for bit.
TEST(Shards, TrainingOnShardsOfTheTextIsTrainingOnTheText) {
  if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  if (std::system("python3 --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const std::string prefix = fresh_dir("shards") + "/ts";
  const std::string cmd = "python3 scripts/text_to_shards.py " + std::string(kShakespeare) + " " +
                          prefix + " --val-fraction 0.1 --shard-tokens 400000 > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ASSERT_TRUE(fs::exists(prefix + "_train_000002.bin"));

  train::TrainConfig text = small_run("shards_text", model::FfnKind::moe, model::RouterKind::relu);
  text.steps = 8;
  text.eval_every = 4;
  train::TrainConfig shards = text;
  shards.run_dir = fresh_dir("shards_llmc");
  shards.data_format = train::DataFormat::llmc;
  shards.data_path = prefix + "_train_*.bin";
  shards.val_path = prefix + "_val_*.bin";
  const train::RunResult a = train::run_training(text), b = train::run_training(shards);
  ASSERT_EQ(b.steps.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(b.steps[i].loss, a.steps[i].loss) << "step " << i + 1;
    EXPECT_EQ(b.steps[i].has_val, a.steps[i].has_val) << "step " << i + 1;
    EXPECT_EQ(b.steps[i].val_loss, a.steps[i].val_loss) << "step " << i + 1;
  }
  EXPECT_LT(b.steps.back().loss, b.steps.front().loss);
  for (const auto& dir : {text.run_dir, shards.run_dir, fs::path(prefix).parent_path().string()})
    fs::remove_all(dir);
}

// A count-based bigram model with add-one smoothing fitted on the training split, scored on
// the validation windows the trainer evaluates on: the baseline the tiny run must beat.
double bigram_val_loss(const train::TrainConfig& c) {
  const train::Corpus corpus = train::load_text(c.data_path, c.val_fraction);
  std::vector<int32_t> bytes(size_t(corpus.train_end));
  corpus.train.read(0, corpus.train_end, bytes.data());
  std::vector<double> counts(256 * 256, 1.0), totals(256, 256.0);
  for (size_t i = 0; i + 1 < bytes.size(); ++i) {
    counts[size_t(bytes[i]) * 256 + size_t(bytes[i + 1])] += 1;
    totals[size_t(bytes[i])] += 1;
  }
  double total = 0;
  int64_t n = 0;
  for (int64_t b = 0; b < c.eval_batches; ++b) {
    const train::Batch batch = train::fixed_batch(corpus.val, corpus.val_begin, corpus.val.size(),
                                                  c.seq_len, c.batch_size, b, c.eval_batches);
    const auto in = batch.inputs.to_vector<int32_t>(), tg = batch.targets.to_vector<int32_t>();
    for (size_t i = 0; i < in.size(); ++i, ++n)
      total -= std::log(counts[size_t(in[i]) * 256 + size_t(tg[i])] / totals[size_t(in[i])]);
  }
  return total / double(n);
}

TEST(TinyConfig, BeatsBigramAndHoldsTheTargetSparsity) {
  if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  train::TrainConfig c = train::load_config("configs/tiny.toml", {});
  c.run_dir = fresh_dir("tiny");
  c.log_every = 50;
  const double bigram = bigram_val_loss(c);
  const train::RunResult r = train::run_training(c);
  std::printf("tiny: validation loss %.4f vs bigram %.4f nats/byte\n", r.final_val_loss, bigram);
  EXPECT_LT(r.final_val_loss, bigram);
  // Stage I (dense) → II (λ grows, sparsity climbs and overshoots) → III (held): the target is
  // reached by mid-run, and over the second half the mean sparsity is within ±0.01 of 1 − k/E
  // with at least 95% of the steps within ±0.02 (one step's S is measured on 512 tokens only).
  const double target = c.model.target_sparsity();
  const size_t half = r.steps.size() / 2;
  size_t reached = r.steps.size();
  for (size_t i = 0; i < r.steps.size() && reached == r.steps.size(); ++i)
    if (std::abs(r.steps[i].sparsity - target) <= 0.02) reached = i;
  EXPECT_LT(reached, half) << "sparsity never reached " << target << " in the first half";
  double mean = 0;
  int outside = 0;
  for (size_t i = half; i < r.steps.size(); ++i) {
    mean += r.steps[i].sparsity / double(r.steps.size() - half);
    outside += std::abs(r.steps[i].sparsity - target) > 0.02;
  }
  std::printf("tiny: target %.4f reached at step %zu; second half mean %.4f, %d steps outside ±0.02\n",
              target, reached + 1, mean, outside);
  EXPECT_NEAR(mean, target, 0.01);
  EXPECT_LE(outside, int(r.steps.size() - half) / 20);
  fs::remove_all(c.run_dir);
}

// The binary on bad input: one line naming the problem, a non-zero exit, no crash.
class BadInput : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(BadInput, OneLineErrorAndNonZeroExit) {
  const char* bin = std::getenv("REMOE_BIN");
  if (!bin) GTEST_SKIP() << "REMOE_BIN not set (run through meson test)";
  const auto [args, expected] = GetParam();
  const std::string out = fresh_dir("bad") + ".txt";
  const int status = std::system((std::string(bin) + " train --config configs/tiny.toml " + args +
                                  " --log.run_dir=" + fresh_dir("bad") + " > /dev/null 2> " + out).c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "crashed";
  EXPECT_NE(WEXITSTATUS(status), 0);
  std::ifstream in(out);
  const std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find(expected), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  fs::remove(out);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadInput,
    ::testing::Values(std::pair{"--data.path=/nonexistent/file.txt", "/nonexistent/file.txt"},
                      std::pair{"--model.n_expert=4", "model.n_experts"},
                      std::pair{"--model.d_model=sixty", "model.d_model"},
                      std::pair{"--model.top_k=9", "top_k"},
                      std::pair{"--model.d_model=66", "n_heads"},
                      std::pair{"--train.seq_len=2000000", "longer than the data"},
                      std::pair{"--dist.expert_parallel=3", "does not divide the 8 experts"},
                      std::pair{"--dist.expert_parallel=2", "needs at least that many ranks (GPUs), but the job has 1"}));

TEST(BadInputFiles, EmptyDataFileAndMissingConfig) {
  const char* bin = std::getenv("REMOE_BIN");
  if (!bin) GTEST_SKIP() << "REMOE_BIN not set (run through meson test)";
  const std::string empty = fresh_dir("empty") + ".txt";
  std::ofstream(empty).close();
  const std::string cmd = std::string(bin) + " train --config configs/tiny.toml --data.path=" + empty + " 2>/dev/null >/dev/null";
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  const int missing = std::system((std::string(bin) + " train --config /nonexistent.toml 2>/dev/null").c_str());
  EXPECT_TRUE(WIFEXITED(missing) && WEXITSTATUS(missing) != 0);
  fs::remove(empty);
}

// Several ranks train on one GPU each over NCCL: a launch that asks for the CPU (or a build
// without NCCL) is refused before anything starts, naming the rank and the launcher.
TEST(BadInputFiles, SeveralRanksOnTheCpuAreRefused) {
  const char* bin = std::getenv("REMOE_BIN");
  if (!bin) GTEST_SKIP() << "REMOE_BIN not set (run through meson test)";
  const std::string out = fresh_dir("ranks") + ".txt";
  const std::string cmd = "env WORLD_SIZE=2 RANK=1 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 "
                          "TORCHELASTIC_RUN_ID=e2e MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 " + std::string(bin) +
                          " train --config configs/tiny.toml --train.device=cpu --log.run_dir=" +
                          fresh_dir("ranks") + " > /dev/null 2> " + out;
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "crashed";
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string err = test::read_file(out);
  EXPECT_NE(err.find("rank 1 of 2 (started by torchrun)"), std::string::npos) << err;
  EXPECT_TRUE(err.find("train.device = \"cpu\"") != std::string::npos ||
              err.find("built without NCCL") != std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  fs::remove(out);
}

// --- the binary in trouble ------------------------------------------------------------

extern "C" char** environ;

std::vector<nlohmann::json> metric_lines(const std::string& run_dir) {
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  std::vector<nlohmann::json> lines;
  std::string line;
  // A line being written when the process was stopped may be partial: only whole lines count.
  while (std::getline(in, line) && !in.eof()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// `remoe train --config configs/tiny.toml <args>`, shrunk to a model and batches about 8 times
// cheaper, started in the background with stdout and stderr into files and `env` added to the
// environment (one OpenMP thread: the e2e suite shares small machines).
class Remoe {
 public:
  Remoe(const std::string& name, const std::vector<std::string>& args,
        const std::vector<std::string>& env = {})
      : out_(fresh_dir(name) + ".out"), err_(fresh_dir(name) + ".err") {
    std::vector<std::string> argv_s = {
        bin(), "train", "--config", "configs/tiny.toml", "--model.d_model=32",
        "--model.n_heads=2", "--model.n_kv_heads=1", "--model.d_ffn=64", "--model.n_experts=4",
        "--train.batch_size=4", "--train.seq_len=32", "--eval.batches=2"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_s = env;
    env_s.emplace_back("OMP_NUM_THREADS=1");
    for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
    std::vector<char*> envp;
    for (std::string& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) pid_ = -1;
  }
  ~Remoe() {
    if (pid_ > 0) {  // a test that failed half-way: do not leave it running
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    fs::remove(out_);
    fs::remove(err_);
  }
  Remoe(const Remoe&) = delete;
  Remoe& operator=(const Remoe&) = delete;

  static std::string bin() { return std::getenv("REMOE_BIN"); }
  bool started() const { return pid_ > 0; }
  void signal(int sig) const { ::kill(pid_, sig); }
  // The wait status.
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  bool running() const { return ::waitpid(pid_, nullptr, WNOHANG) == 0; }
  std::string out() const { return read_file(out_); }
  std::string err() const { return read_file(err_); }

 private:
  std::string out_, err_;
  pid_t pid_ = -1;
};

// Polls `done` every 5 ms for up to a minute; false on timeout or when the process ended.
template <typename Fn>
bool wait_for(const Remoe& p, Fn&& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    if (!p.running()) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

class Trouble : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::getenv("REMOE_BIN")) GTEST_SKIP() << "REMOE_BIN not set (run through meson test)";
    if (!fs::exists(kShakespeare)) GTEST_SKIP() << kShakespeare << " not found";
  }
};

TEST_F(Trouble, SigtermSavesACheckpointExits143AndTheRerunResumes) {
  const std::string run = fresh_dir("sigterm");
  // A run that would take hours, stopped once a few steps are logged.
  Remoe p("sigterm", {"--train.steps=1000000", "--log.run_dir=" + run});
  ASSERT_TRUE(p.started());
  ASSERT_TRUE(wait_for(p, [&] { return metric_lines(run).size() >= 3; })) << p.err();
  p.signal(SIGTERM);
  const int status = p.wait();
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 143) << p.err();
  const auto lines = metric_lines(run);
  ASSERT_GE(lines.size(), 3u);
  const int64_t last = lines.back().at("step").get<int64_t>();
  EXPECT_EQ(last, int64_t(lines.size()));
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", (long long)last);
  const fs::path ck = fs::path(run) / "checkpoints" / name;
  EXPECT_TRUE(fs::exists(ck / "COMPLETE")) << "no checkpoint of the last step " << last;
  EXPECT_EQ(train::latest_checkpoint(run), ck.string());
  EXPECT_NE(p.out().find("interrupted by SIGTERM at step " + std::to_string(last) +
                         ", checkpoint saved to " + ck.string()),
            std::string::npos)
      << p.out();
  EXPECT_EQ(p.err(), "");

  // The rerun (shortened to two more steps: train.steps may change) resumes from it.
  Remoe again("sigterm2", {"--train.steps=" + std::to_string(last + 2), "--log.run_dir=" + run});
  const int status2 = again.wait();
  ASSERT_TRUE(WIFEXITED(status2) && WEXITSTATUS(status2) == 0) << again.err();
  EXPECT_NE(again.out().find("resuming from " + ck.string()), std::string::npos) << again.out();
  const auto all = metric_lines(run);
  ASSERT_EQ(all.size(), size_t(last + 2));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].at("step").get<size_t>(), i + 1);
  fs::remove_all(run);
}

TEST_F(Trouble, KillDuringACheckpointWriteLeavesThePreviousOneAndResumeIsBitIdentical) {
  const std::vector<std::string> args = {"--train.steps=12", "--checkpoint.every=4",
                                         "--eval.every=0"};
  auto with_dir = [&](const std::string& dir) {
    std::vector<std::string> a = args;
    a.push_back("--log.run_dir=" + dir);
    return a;
  };
  const std::string straight = fresh_dir("straight_bin"), run = fresh_dir("kill9");
  Remoe ref("straight_bin", with_dir(straight));
  const int ref_status = ref.wait();
  ASSERT_TRUE(WIFEXITED(ref_status) && WEXITSTATUS(ref_status) == 0) << ref.err();

  // Each checkpoint write pauses 300 ms between its files: step 4's completes, and the process
  // is killed while step 8's is still a .tmp directory.
  const fs::path ckpts = fs::path(run) / "checkpoints";
  Remoe p("kill9", with_dir(run), {"REMOE_TEST_CHECKPOINT_DELAY_MS=300"});
  ASSERT_TRUE(p.started());
  ASSERT_TRUE(wait_for(p, [&] { return fs::exists(ckpts / "step_00000008.tmp"); })) << p.err();
  p.signal(SIGKILL);
  const int status = p.wait();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE(fs::exists(ckpts / "step_00000004" / "COMPLETE"));
  EXPECT_TRUE(fs::exists(ckpts / "step_00000008.tmp")) << "the half-written checkpoint";
  EXPECT_FALSE(fs::exists(ckpts / "step_00000008"));
  EXPECT_EQ(train::latest_checkpoint(run), (ckpts / "step_00000004").string());

  Remoe again("kill9_again", with_dir(run));
  const int status2 = again.wait();
  ASSERT_TRUE(WIFEXITED(status2) && WEXITSTATUS(status2) == 0) << again.err();
  EXPECT_NE(again.out().find("resuming from " + (ckpts / "step_00000004").string()),
            std::string::npos)
      << again.out();
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(ckpts)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"step_00000004", "step_00000008", "step_00000012"}))
      << "the .tmp directory is cleaned up";

  // Every step's numbers equal the uninterrupted run's, bit for bit.
  const auto a = metric_lines(straight), b = metric_lines(run);
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_EQ(b[i].at("step"), a[i].at("step"));
    EXPECT_EQ(b[i].at("loss").get<double>(), a[i].at("loss").get<double>());
    EXPECT_EQ(b[i].at("lambda").get<double>(), a[i].at("lambda").get<double>());
    EXPECT_EQ(b[i].at("grad_norm").get<double>(), a[i].at("grad_norm").get<double>());
  }
  EXPECT_EQ(b.back().at("val_loss").get<double>(), a.back().at("val_loss").get<double>());
  fs::remove_all(straight);
  fs::remove_all(run);
}

TEST_F(Trouble, ADivergingRunStopsAfterMaxSkipsWithACheckpointAndAnError) {
  // A learning rate of 1e30 blows the weights up at the first update: every later step is
  // non-finite and skipped, and after three the run stops.
  const std::string run = fresh_dir("diverge");
  Remoe p("diverge", {"--optim.lr=1e30", "--optim.warmup_steps=0", "--train.max_skips=3",
                      "--log.run_dir=" + run});
  const int status = p.wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = p.err();
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("3 steps in a row had a non-finite loss or gradient"), std::string::npos) << err;
  EXPECT_NE(err.find("the weights after step 1"), std::string::npos) << err;
  const auto lines = metric_lines(run);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_FALSE(lines[0].contains("skipped"));
  for (size_t i = 1; i < 4; ++i) EXPECT_EQ(lines[i].at("skipped"), true);
  EXPECT_NE(p.out().find("step      2/300 | skipped: "), std::string::npos) << p.out();
  EXPECT_TRUE(fs::exists(fs::path(run) / "checkpoints" / "step_00000004" / "COMPLETE"));
  fs::remove_all(run);
}

}  // namespace
}  // namespace remoe::test
