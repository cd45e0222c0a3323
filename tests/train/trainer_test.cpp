// The training loop in trouble, on a tiny model and a small generated text (milliseconds per
// run): non-finite steps are skipped and then stop the run with a checkpoint, a resume refuses
// a checkpoint made with a different config (and accepts the keys that may change), a signal
// stops the run with a checkpoint, and old checkpoints are pruned.
#include "train/trainer.h"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"
#include "tests/train/sandbox.h"
#include "train/checkpoint.h"
#include "train/phase_timer.h"
#include "train/schedule.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;
using test::expect_contains;
using test::error_of;

std::vector<nlohmann::json> metric_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// Every parameter's values, in order.
std::vector<std::vector<float>> snapshot(const std::vector<Tensor>& params) {
  std::vector<std::vector<float>> out;
  for (const Tensor& p : params) out.push_back(p.to_vector<float>());
  return out;
}

// A hook that writes `value` into the first gradient element of the first parameter at each
// of `steps`, and keeps a snapshot of the weights as they are at each step's backward (= after
// the previous step's update).
struct Poison {
  std::vector<int64_t> steps;
  float value = std::numeric_limits<float>::quiet_NaN();
  std::map<int64_t, std::vector<std::vector<float>>> weights_before;

  TrainingHooks hooks() {
    TrainingHooks h;
    h.after_backward = [this](const std::vector<Tensor>& params, int64_t step) {
      weights_before[step] = snapshot(params);
      if (std::find(steps.begin(), steps.end(), step) == steps.end()) return;
      const Tensor g = params[0].grad();
      ASSERT_TRUE(g.defined()) << params[0].name() << " has no gradient";
      g.data<float>()[0] = value;
    };
    return h;
  }
};

// --- non-finite steps ----------------------------------------------------------------

// train.precision = "bf16" on the CPU: the GEMMs' roundings emulated (model/precision.h). The
// run learns as the f32 one does and ends near it, but not bit for bit on it.
// Spans add up per phase, phases come back in the order they first ran, and a new step
// starts from nothing.
TEST(PhaseTimer, SumsSpansByPhaseInTheOrderTheyRan) {
  train::PhaseTimer timer(Device::cpu);
  const auto busy = [](double ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double, std::milli>(ms);
    while (std::chrono::steady_clock::now() < until) {
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  timer.start();
  busy(3);
  timer.mark("forward");
  busy(1);
  timer.mark("backward");
  busy(2);
  timer.mark("forward");
  const auto got = timer.collect();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].first, "forward");
  EXPECT_EQ(got[1].first, "backward");
  EXPECT_GE(got[0].second, 5e-3);
  EXPECT_GE(got[1].second, 1e-3);
  EXPECT_LE(got[0].second + got[1].second, wall);
  timer.start();
  EXPECT_TRUE(timer.collect().empty());
}

TEST(Precision, Bf16RunOnTheCpuTracksTheF32Run) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 12;
  std::vector<StepRecord> f32, bf16;
  run_training(c, [&](const StepRecord& r) { f32.push_back(r); });
  c.precision = PrecisionChoice::bf16;
  c.run_dir += "_bf16";
  run_training(c, [&](const StepRecord& r) { bf16.push_back(r); });
  ASSERT_EQ(bf16.size(), f32.size());
  EXPECT_NE(bf16.back().loss, f32.back().loss) << "the bf16 policy changed nothing";
  EXPECT_NEAR(bf16.back().loss, f32.back().loss, 0.02 * f32.back().loss);
  EXPECT_LT(bf16.back().loss, bf16.front().loss) << "the bf16 run did not learn";
}

TEST(NonFinite, ASkippedStepChangesNothingAndTrainingGoesOn) {
  Sandbox box;
  const TrainConfig c = box.config();
  Poison nan;
  nan.steps = {3};
  Poison inf;  // a second run, poisoned with +inf at step 5
  inf.steps = {5};
  inf.value = std::numeric_limits<float>::infinity();

  const RunResult r = run_training(c, {}, nan.hooks());
  ASSERT_EQ(r.steps.size(), 8u);
  EXPECT_TRUE(r.steps[2].skipped);
  EXPECT_EQ(r.steps[2].skip_reason, "grad norm is nan");
  EXPECT_TRUE(std::isnan(r.steps[2].grad_norm));
  EXPECT_TRUE(std::isfinite(r.steps[2].loss)) << "only the gradient was poisoned";
  for (size_t i : {0u, 1u, 3u, 4u, 5u, 6u, 7u}) EXPECT_FALSE(r.steps[i].skipped) << "step " << i + 1;
  // The weights after step 3 are those after step 2; step 4 changes them again.
  EXPECT_EQ(nan.weights_before.at(4), nan.weights_before.at(3));
  EXPECT_NE(nan.weights_before.at(5), nan.weights_before.at(4));
  // λ moves every step (×α or ÷α) except across the skipped one.
  EXPECT_NE(r.steps[2].lambda, r.steps[1].lambda);
  EXPECT_EQ(r.steps[3].lambda, r.steps[2].lambda);
  EXPECT_NE(r.steps[4].lambda, r.steps[3].lambda);
  // The schedule and the data go on: the learning rate of step 4 is step 4's.
  EXPECT_NE(r.steps[3].lr, r.steps[2].lr);
  for (const StepRecord& s : r.steps) EXPECT_TRUE(std::isfinite(s.loss)) << "step " << s.step;

  const auto lines = metric_lines(box.metrics());
  ASSERT_EQ(lines.size(), 8u);
  EXPECT_EQ(lines[2].at("step"), 3);
  EXPECT_EQ(lines[2].at("skipped"), true);
  EXPECT_EQ(lines[2].at("skip_reason"), "grad norm is nan");
  EXPECT_TRUE(lines[2].at("grad_norm").is_null()) << "JSON has no NaN";
  EXPECT_FALSE(lines[3].contains("skipped"));

  fs::remove_all(c.run_dir);
  const RunResult r2 = run_training(c, {}, inf.hooks());
  ASSERT_EQ(r2.steps.size(), 8u);
  EXPECT_TRUE(r2.steps[4].skipped);
  EXPECT_EQ(r2.steps[4].skip_reason, "grad norm is inf");
  EXPECT_EQ(inf.weights_before.at(6), inf.weights_before.at(5));
  // Up to the poisoned step the two runs are the same run.
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(r2.steps[i].loss, r.steps[i].loss);
}

TEST(NonFinite, MaxSkipsInARowStopsWithACheckpointOfTheLastGoodState) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 10;
  c.max_skips = 3;
  Poison p;
  p.steps = {3, 4, 5};
  std::vector<StepRecord> seen;
  const std::string message =
      error_of([&] { run_training(c, [&](const StepRecord& r) { seen.push_back(r); }, p.hooks()); });
  const fs::path dir = box.checkpoints() / "step_00000005";
  expect_contains(message, "step 5: 3 steps in a row had a non-finite loss or gradient");
  expect_contains(message, "train.max_skips = 3");
  expect_contains(message, "grad norm is nan");
  expect_contains(message, "the weights after step 2");
  expect_contains(message, dir.string());
  EXPECT_EQ(seen.size(), 5u);
  EXPECT_EQ(metric_lines(box.metrics()).size(), 5u);

  // The checkpoint holds the weights after step 2 (as step 3's backward saw them).
  const Checkpoint ck = load_checkpoint(dir.string());
  EXPECT_EQ(ck.step, 5);
  EXPECT_EQ(snapshot(ck.model), p.weights_before.at(3));

  // Two skips in a row and then a good step do not stop the run.
  fs::remove_all(c.run_dir);
  Poison two;
  two.steps = {3, 4, 6, 7};
  EXPECT_EQ(run_training(c, {}, two.hooks()).steps.size(), 10u);

  // Running again (without the poison) resumes from the saved state and finishes.
  fs::remove_all(c.run_dir);
  (void)error_of([&] { run_training(c, {}, p.hooks()); });
  const RunResult resumed = run_training(c);
  ASSERT_EQ(resumed.steps.size(), 5u);
  EXPECT_EQ(resumed.steps.front().step, 6);
  for (const StepRecord& s : resumed.steps) EXPECT_FALSE(s.skipped);
}

// --- resume safety -------------------------------------------------------------------

TEST(ResumeSafety, RefusesACheckpointMadeWithADifferentConfigNamingEveryKey) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 4;
  run_training(c);
  const std::string dir = (box.checkpoints() / "step_00000004").string();

  TrainConfig other = c;
  other.steps = 8;
  other.model.d_model = 32;
  other.seed = 7;
  other.alpha = 1.5;
  const std::string message = error_of([&] { run_training(other); });
  EXPECT_EQ(message, "checkpoint " + dir +
                         " was made with model.d_model = 16, this run has 32; train.seed = 1337, "
                         "this run has 7; remoe.alpha = 1.2, this run has 1.5 (these keys must "
                         "not change when a run resumes; use another log.run_dir to start a new "
                         "run)");

  for (auto change : std::vector<std::function<void(TrainConfig&)>>{
           [](TrainConfig& x) { x.model.ffn = model::FfnKind::dense; },
           [](TrainConfig& x) { x.data_path += ".copy"; },
           [](TrainConfig& x) { x.val_fraction = 0.2; },
           [](TrainConfig& x) { x.batch_size = 3; },
           [](TrainConfig& x) { x.seq_len = 8; },
           [](TrainConfig& x) { x.grad_accum = 2; },
           [](TrainConfig& x) { x.lambda0 = 1e-6; }}) {
    TrainConfig bad = c;
    bad.steps = 8;
    change(bad);
    auto diffs = config_differences(c, bad);
    ASSERT_EQ(diffs.size(), 2u);  // train.steps (allowed) and the changed key
    std::erase_if(diffs, [](const ConfigDifference& d) { return d.key == "train.steps"; });
    ASSERT_EQ(diffs.size(), 1u);
    SCOPED_TRACE(diffs[0].key);
    if (bad.data_path != c.data_path) fs::copy_file(c.data_path, bad.data_path);
    const std::string m = error_of([&] { run_training(bad); });
    expect_contains(m, str_cat(diffs[0].key, " = ", diffs[0].a, ", this run has ", diffs[0].b));
    EXPECT_EQ(m.find("train.steps"), std::string::npos) << m;
  }
  // Nothing was written by the refused runs: the checkpoint is still the latest, of step 4.
  EXPECT_EQ(latest_checkpoint(c.run_dir), dir);
  EXPECT_EQ(metric_lines(box.metrics()).size(), 4u);
}

TEST(ResumeSafety, AcceptsTheKeysThatMayChange) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 4;
  run_training(c);

  TrainConfig more = c;
  more.steps = 6;
  more.max_skips = 9;
  more.lr = 1e-3;
  more.min_lr = 1e-4;
  more.warmup_steps = 0;
  more.weight_decay = 0.1;
  more.beta1 = 0.8;
  more.beta2 = 0.99;
  more.eps = 1e-7;
  more.grad_clip = 0.5;
  more.eval_every = 1;
  more.eval_batches = 2;
  more.checkpoint_every = 1;
  more.keep_last = 5;
  more.keep_every = 2;
  more.log_every = 3;
  ASSERT_EQ(config_differences(c, more).size(), 16u) << "every key above differs";
  const RunResult r = run_training(more);
  ASSERT_EQ(r.steps.size(), 2u);
  EXPECT_EQ(r.steps.front().step, 5);
  EXPECT_EQ(r.steps.front().lr, learning_rate(more, 4)) << "the new schedule applies";
  EXPECT_NE(learning_rate(more, 4), learning_rate(c, 4));
  EXPECT_TRUE(r.steps.front().has_val) << "eval.every = 1 applies";
}

TEST(ResumeSafety, TheKeyPolicyIsExplicit) {
  for (const char* key : {"train.steps", "train.max_skips", "optim.lr", "optim.warmup_steps",
                          "eval.every", "eval.batches", "checkpoint.every", "checkpoint.keep_last",
                          "log.run_dir", "log.every", "dist.expert_parallel", "dist.bucket_mb", "dist.zero1",
                          "train.device", "train.precision"})
    EXPECT_TRUE(may_change_on_resume(key)) << key;
  for (const char* key : {"model.d_model", "model.router", "model.granularity", "data.path",
                          "data.val_fraction", "train.seed", "train.batch_size", "train.seq_len",
                          "train.grad_accum", "remoe.lambda0", "remoe.alpha", "data.format",
                          "something.new"})
    EXPECT_FALSE(may_change_on_resume(key)) << key;
}

TEST(ResumeSafety, ABadStateIsRefusedBeforeAnythingIsLoaded) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 2;
  run_training(c);
  const fs::path dir = box.checkpoints() / "step_00000002";
  const std::string state_path = (dir / "state.json").string();
  std::ifstream in(state_path);
  const nlohmann::json good = nlohmann::json::parse(in);
  c.steps = 4;

  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string expected;
  };
  for (const Case& k : std::vector<Case>{
           {[](nlohmann::json& s) { s.erase("lambda"); }, "has no \"lambda\""},
           {[](nlohmann::json& s) { s["lambda"] = -1.0; }, "\"lambda\" is -1.0, expected a positive"},
           {[](nlohmann::json& s) { s["lambda"] = "big"; }, "\"lambda\" is \"big\""},
           {[](nlohmann::json& s) { s["data_rng"] = {1, 2, 3}; }, "\"data_rng\" is [1,2,3]"},
           {[](nlohmann::json& s) { s["data_rng"] = {1, 2, 3, -4}; }, "expected 4 unsigned"},
           {[](nlohmann::json& s) { s.erase("data_rng"); }, "has no \"data_rng\""},
           {[](nlohmann::json& s) { s.erase("config"); }, "has no \"config\" string"},
           {[](nlohmann::json& s) { s["config"] = "[model]\nd_model = 'x'\n"; },
            "model.d_model = \"x\": expected an integer"}}) {
    nlohmann::json s = good;
    k.edit(s);
    std::ofstream(state_path) << s.dump(2);
    const std::string message = error_of([&] { run_training(c); });
    expect_contains(message, state_path);
    expect_contains(message, k.expected);
  }
  std::ofstream(state_path) << good.dump(2);

  // A tensor set that does not match is refused the same way, naming the file.
  const Checkpoint ck = load_checkpoint(dir.string());
  std::vector<Tensor> fewer(ck.optimizer.begin(), ck.optimizer.end() - 1);
  save_safetensors((dir / "optimizer.safetensors").string(), fewer);
  const std::string message = error_of([&] { run_training(c); });
  expect_contains(message, (dir / "optimizer.safetensors").string());
  expect_contains(message, "no tensor '" + ck.optimizer.back().name() + "'");

  // A checkpoint beyond train.steps.
  save_safetensors((dir / "optimizer.safetensors").string(), ck.optimizer);
  c.steps = 1;
  expect_contains(error_of([&] { run_training(c); }),
                  "is of step 2, beyond train.steps = 1 (raise train.steps to continue the run)");
  c.steps = 4;
  EXPECT_EQ(run_training(c).steps.size(), 2u);  // repaired: it resumes
}

// --- signals ---------------------------------------------------------------------------

TEST(Signals, SigtermStopsAfterTheStepWithACheckpointAndRestoresTheHandler) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 20;
  for (int sig : {SIGTERM, SIGINT}) {
    SCOPED_TRACE(sig);
    fs::remove_all(c.run_dir);
    const RunResult r = run_training(c, [sig](const StepRecord& s) {
      if (s.step == 3) std::raise(sig);
    });
    EXPECT_EQ(r.interrupted_by, sig);
    ASSERT_EQ(r.steps.size(), 3u);
    EXPECT_EQ(r.last_checkpoint, (box.checkpoints() / "step_00000003").string());
    EXPECT_EQ(latest_checkpoint(c.run_dir), r.last_checkpoint);
    EXPECT_EQ(metric_lines(box.metrics()).size(), 3u);
    // Outside run_training the disposition is what it was (the default: terminate).
    struct sigaction now {};
    ASSERT_EQ(::sigaction(sig, nullptr, &now), 0);
    EXPECT_EQ(now.sa_handler, SIG_DFL);
  }
  // A rerun resumes from the checkpoint and finishes.
  const RunResult rest = run_training(c);
  EXPECT_EQ(rest.interrupted_by, 0);
  ASSERT_EQ(rest.steps.size(), 17u);
  EXPECT_EQ(rest.steps.front().step, 4);
}

// --- retention -------------------------------------------------------------------------

TEST(Retention, KeepsTheNewestAndTheMultiples) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 8;
  c.checkpoint_every = 1;
  c.keep_last = 2;
  c.keep_every = 3;
  std::vector<size_t> counts;  // checkpoints on disk after each step
  const RunResult r = run_training(c, [&](const StepRecord&) {
    counts.push_back(size_t(std::distance(fs::directory_iterator(box.checkpoints()),
                                          fs::directory_iterator())));
  });
  EXPECT_EQ(r.last_checkpoint, (box.checkpoints() / "step_00000008").string());
  // 1 | 1 2 | 2 3 | 3 4 | 3 4 5 | 3 5 6 | 3 6 7 | 3 6 7 8
  EXPECT_EQ(counts, (std::vector<size_t>{1, 2, 2, 2, 3, 3, 3, 4}));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(box.checkpoints()))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step_00000003", "step_00000006", "step_00000007",
                                             "step_00000008"}));
}

}  // namespace
}  // namespace remoe::train
