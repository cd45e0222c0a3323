// Data-parallel training on W threads of one process (dist::run_threads) against one process
// with W times the micro-batches (REMOE_SPEC §2: the loss and the regulariser average over
// micro-batches and ranks alike, S is the mean over layers, micro-batches and ranks): the same
// losses, gradients, sparsity and λ trajectory; and the job-size checks.
#include <mutex>

#include "dist/thread_group.h"
#include "tests/test_util.h"
#include "tests/train/sandbox.h"
#include "train/trainer.h"

namespace remoe::train {
namespace {

using test::error_of;

struct Trace {
  std::vector<StepRecord> steps;
  std::vector<std::vector<std::vector<float>>> grads;  // [step][param] after the reduction
};

TrainingHooks record_grads(Trace& trace) {
  TrainingHooks h;
  h.after_backward = [&trace](const std::vector<Tensor>& params, int64_t) {
    std::vector<std::vector<float>> g;
    for (const Tensor& p : params) g.push_back(p.grad().to_vector<float>());
    trace.grads.push_back(std::move(g));
  };
  return h;
}

Trace run_single(const TrainConfig& c) {
  Trace t;
  run_training(c, [&](const StepRecord& r) { t.steps.push_back(r); }, record_grads(t));
  return t;
}

std::vector<Trace> run_parallel(const TrainConfig& c, int world) {
  std::vector<Trace> traces(static_cast<size_t>(world));
  dist::run_threads(world, [&](dist::Communicator& comm) {
    Trace& t = traces[size_t(comm.rank())];
    run_training(c, comm, [&](const StepRecord& r) { t.steps.push_back(r); }, record_grads(t));
  });
  return traces;
}

::testing::AssertionResult close(double a, double b, double rtol) {
  if (std::abs(a - b) <= 1e-9 + rtol * std::abs(b)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << a << " vs " << b;
}

class DataParallel : public ::testing::TestWithParam<int> {};

// W ranks × A micro-batches ≡ 1 process × W·A micro-batches: the same windows in the same
// order, the same gradients up to the order of the sum (f32), the same routing counts — so
// the same S and λ, bit for bit — and every rank the same as every other, bit for bit.
TEST_P(DataParallel, EqualsOneProcessWithWTimesTheMicroBatches) {
  const int world = GetParam();
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 6;
  c.grad_accum = 2;
  c.eval_every = 3;
  c.eval_batches = 3;  // not a multiple of W: ranks evaluate 2 and 1 (or 1, 1, 1, 0) batches
  c.bucket_mb = 0.002;  // ~2 KB: several buckets for this model
  c.run_dir = box.config().run_dir + "_dp";
  TrainConfig one = box.config();
  one.steps = c.steps;
  one.grad_accum = c.grad_accum * world;
  one.eval_every = c.eval_every;
  one.eval_batches = c.eval_batches;

  const Trace ref = run_single(one);
  const std::vector<Trace> dp = run_parallel(c, world);
  ASSERT_EQ(ref.steps.size(), size_t(c.steps));
  for (int rank = 0; rank < world; ++rank) {
    const Trace& t = dp[size_t(rank)];
    ASSERT_EQ(t.steps.size(), ref.steps.size()) << "rank " << rank;
    for (size_t s = 0; s < ref.steps.size(); ++s) {
      const StepRecord &a = t.steps[s], &b = ref.steps[s];
      SCOPED_TRACE(::testing::Message() << "rank " << rank << ", step " << b.step);
      EXPECT_TRUE(close(a.loss, b.loss, 1e-5));
      EXPECT_TRUE(close(a.aux, b.aux, 1e-4));
      EXPECT_TRUE(close(a.grad_norm, b.grad_norm, 1e-4));
      EXPECT_EQ(a.lambda, b.lambda) << "λ must follow the same trajectory exactly";
      EXPECT_EQ(a.sparsity, b.sparsity);
      EXPECT_EQ(a.layer_sparsity, b.layer_sparsity);
      EXPECT_EQ(a.expert_load, b.expert_load);
      ASSERT_EQ(a.has_val, b.has_val);
      if (b.has_val) EXPECT_TRUE(close(a.val_loss, b.val_loss, 1e-5));
      // Every gradient of the step, after the reduction.
      for (size_t p = 0; p < ref.grads[s].size(); ++p) {
        const std::vector<float>&ga = t.grads[s][p], &gb = ref.grads[s][p];
        ASSERT_EQ(ga.size(), gb.size());
        for (size_t i = 0; i < gb.size(); ++i)
          ASSERT_LE(std::abs(ga[i] - gb[i]), 1e-7 + 1e-4 * std::abs(gb[i]))
              << "parameter " << p << " element " << i;
      }
      // Replicas stay replicas: every rank holds the same numbers.
      if (rank > 0) {
        EXPECT_EQ(t.grads[s], dp[0].grads[s]);
        EXPECT_EQ(a.loss, dp[0].steps[s].loss);
      }
    }
  }
  // Sparsity moved, so the λ comparison compared something.
  EXPECT_NE(ref.steps.front().lambda, ref.steps.back().lambda);
}

INSTANTIATE_TEST_SUITE_P(World, DataParallel, ::testing::Values(2, 4));

TEST(DataParallelRun, RankZeroAloneWritesAndAResumeNeedsTheSameJobSize) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 3;
  run_parallel(c, 2);
  std::ifstream metrics(box.metrics());
  int lines = 0;
  for (std::string line; std::getline(metrics, line);) ++lines;
  EXPECT_EQ(lines, 3) << "one line per step, from rank 0 only";
  EXPECT_TRUE(std::filesystem::exists(box.checkpoints() / "step_00000003"));

  TrainConfig more = c;
  more.steps = 5;
  const std::string err = error_of([&] { run_training(more); });
  EXPECT_NE(err.find("was made by a job of 2 rank(s), this one has 1"), std::string::npos) << err;
  // The same size resumes.
  std::vector<Trace> resumed = run_parallel(more, 2);
  EXPECT_EQ(resumed[1].steps.size(), 2u);
}

TEST(DataParallelRun, ExpertParallelMustFitTheJob) {
  Sandbox box;
  TrainConfig c = box.config();  // E = 4
  c.expert_parallel = 3;
  EXPECT_NE(error_of([&] { c.validate(); }).find("does not divide the 4 experts"), std::string::npos);
  c.expert_parallel = 4;
  c.validate();
  EXPECT_NE(error_of([&] { c.validate_world(2); })
                .find("dist.expert_parallel = 4 needs at least that many ranks (GPUs), but the job has 2"),
            std::string::npos);
  c.expert_parallel = 2;
  EXPECT_NE(error_of([&] { c.validate_world(3); }).find("does not divide the job's 3 ranks"),
            std::string::npos);
  c.validate_world(4);
  c.model.ffn = model::FfnKind::dense;
  EXPECT_NE(error_of([&] { c.validate(); }).find("a dense model has no experts"), std::string::npos);
}

}  // namespace
}  // namespace remoe::train
