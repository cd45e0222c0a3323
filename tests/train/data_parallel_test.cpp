// Data-parallel training on W threads of one process (dist::run_threads) against one process
// with W times the micro-batches (REMOE_SPEC §2: the loss and the regulariser average over
// micro-batches and ranks alike, S is the mean over layers, micro-batches and ranks): the same
// losses, gradients, sparsity and λ trajectory; and the job-size checks.
#include <csignal>
#include <mutex>

#include "dist/thread_group.h"
#include "tests/test_util.h"
#include "tests/train/sandbox.h"
#include "train/checkpoint.h"
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

// A step of a parallel run against the same step of one process: the numbers that sum over
// micro-batches in another order agree to f32 rounding; those made of integer counts — S, the
// expert loads and so λ — exactly.
void expect_same_step(const StepRecord& a, const StepRecord& b) {
  EXPECT_TRUE(close(a.loss, b.loss, 1e-5));
  EXPECT_TRUE(close(a.aux, b.aux, 1e-4));
  EXPECT_TRUE(close(a.grad_norm, b.grad_norm, 1e-4));
  EXPECT_EQ(a.lambda, b.lambda) << "λ must follow the same trajectory exactly";
  EXPECT_EQ(a.sparsity, b.sparsity);
  EXPECT_EQ(a.layer_sparsity, b.layer_sparsity);
  EXPECT_EQ(a.expert_load, b.expert_load);
  ASSERT_EQ(a.has_val, b.has_val);
  if (b.has_val) {
    EXPECT_TRUE(close(a.val_loss, b.val_loss, 1e-5));
  }
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
      expect_same_step(a, b);
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
  c.validate_world(2);
  c.validate_world(4);  // two expert-parallel groups of 2, data-parallel copies of each other
  c.model.ffn = model::FfnKind::dense;
  EXPECT_NE(error_of([&] { c.validate(); }).find("a dense model has no experts"), std::string::npos);
}


// A real communicator of one rank runs every reduction (buckets, sums, the signal check), and
// adds nothing: bit for bit the run of one process (what a one-GPU NCCL job checks too).
TEST(DataParallelRun, OneRankThroughTheReductionsIsBitIdenticalToOneProcess) {
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 4;
  c.grad_accum = 2;
  c.bucket_mb = 0.002;
  const Trace ref = run_single(c);
  c.run_dir = box.config().run_dir + "_one_rank";
  const std::vector<Trace> one = run_parallel(c, 1);
  ASSERT_EQ(one[0].steps.size(), ref.steps.size());
  for (size_t s = 0; s < ref.steps.size(); ++s) {
    EXPECT_EQ(one[0].steps[s].loss, ref.steps[s].loss) << "step " << s + 1;
    EXPECT_EQ(one[0].steps[s].lambda, ref.steps[s].lambda) << "step " << s + 1;
    EXPECT_EQ(one[0].steps[s].grad_norm, ref.steps[s].grad_norm) << "step " << s + 1;
    EXPECT_EQ(one[0].grads[s], ref.grads[s]) << "step " << s + 1;
  }
}

// Expert parallel (dist.expert_parallel = P over W ranks: W / P groups of P ranks, each group
// one copy of the experts): the same equivalence, the expert gradients being the rank's slice
// (its place in its group) of the one-process gradient; checkpoints hold whole tensors.
bool is_expert_weight(const std::string& name) {
  return name.find(".moe.w") != std::string::npos;  // w1, w3, w2; the router is replicated
}

struct Layout {
  int world, expert_parallel;
};

std::string layout_name(const ::testing::TestParamInfo<Layout>& info) {
  return "W" + std::to_string(info.param.world) + "_EP" + std::to_string(info.param.expert_parallel);
}

class ExpertParallelRun : public ::testing::TestWithParam<Layout> {};

TEST_P(ExpertParallelRun, EqualsOneProcessWithWTimesTheMicroBatches) {
  const int world = GetParam().world, group = GetParam().expert_parallel;
  Sandbox box;
  TrainConfig c = box.config();  // E = 4
  c.steps = 5;
  c.eval_every = 5;
  c.eval_batches = 3;  // uneven over the ranks: the spare ranks still run a forward
  c.expert_parallel = group;
  c.bucket_mb = 0.002;  // several buckets, for the replicated and for the expert gradients
  c.run_dir = box.config().run_dir + "_ep";
  TrainConfig one = box.config();
  one.steps = c.steps;
  one.grad_accum = world;
  one.eval_every = c.eval_every;
  one.eval_batches = c.eval_batches;

  const Trace ref = run_single(one);
  std::vector<std::vector<std::string>> names(static_cast<size_t>(world));
  std::vector<Trace> ep(static_cast<size_t>(world));
  dist::run_threads(world, [&](dist::Communicator& comm) {
    const size_t r = size_t(comm.rank());
    TrainingHooks h = record_grads(ep[r]);
    const auto record = h.after_backward;
    h.after_backward = [&, r, record](const std::vector<Tensor>& params, int64_t step) {
      if (names[r].empty())
        for (const Tensor& p : params) names[r].push_back(p.name());
      record(params, step);
    };
    run_training(c, comm, [&](const StepRecord& s) { ep[r].steps.push_back(s); }, h);
  });
  int expert_params = 0;
  for (int rank = 0; rank < world; ++rank) {
    const Trace& t = ep[size_t(rank)];
    ASSERT_EQ(t.steps.size(), ref.steps.size());
    for (size_t s = 0; s < ref.steps.size(); ++s) {
      const StepRecord &a = t.steps[s], &b = ref.steps[s];
      SCOPED_TRACE(::testing::Message() << "rank " << rank << ", step " << b.step);
      expect_same_step(a, b);
      for (size_t p = 0; p < ref.grads[s].size(); ++p) {
        const std::vector<float>&ga = t.grads[s][p], &gb = ref.grads[s][p];
        size_t offset = 0;  // a sharded weight is rows [i·L, (i+1)·L) of the full one, i = r % P
        if (is_expert_weight(names[size_t(rank)][p])) {
          ASSERT_EQ(ga.size() * size_t(group), gb.size()) << names[size_t(rank)][p];
          offset = size_t(rank % group) * ga.size();
          expert_params += s == 0 && rank == 0;
        } else {
          ASSERT_EQ(ga.size(), gb.size()) << names[size_t(rank)][p];
        }
        for (size_t i = 0; i < ga.size(); ++i)
          ASSERT_LE(std::abs(ga[i] - gb[offset + i]), 1e-7 + 1e-4 * std::abs(gb[offset + i]))
              << names[size_t(rank)][p] << " element " << i;
      }
      // The copies of one block of experts (ranks r % P + k·P) hold the same gradient, bit for
      // bit, and every rank the same replicated gradients.
      if (rank >= group) {
        EXPECT_EQ(t.grads[s], ep[size_t(rank % group)].grads[s]);
        EXPECT_EQ(a.grad_norm, ep[0].steps[s].grad_norm);
      }
    }
  }
  EXPECT_EQ(expert_params, 3) << "w1, w3 and w2 of the one MoE layer are sharded";
  // The checkpoint holds the whole experts, equal to the one-process run's (same weights up
  // to the order of sums).
  const std::string dir = (std::filesystem::path(c.run_dir) / "checkpoints" / "step_00000005").string();
  const Checkpoint sharded = load_checkpoint(dir);
  const Checkpoint whole = load_checkpoint(
      (std::filesystem::path(one.run_dir) / "checkpoints" / "step_00000005").string());
  ASSERT_EQ(sharded.model.size(), whole.model.size());
  for (size_t i = 0; i < whole.model.size(); ++i) {
    ASSERT_EQ(sharded.model[i].name(), whole.model[i].name());
    EXPECT_TRUE(test::all_close(sharded.model[i], whole.model[i], 1e-6, 1e-4)) << whole.model[i].name();
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ExpertParallelRun,
                         ::testing::Values(Layout{2, 2}, Layout{4, 4}, Layout{4, 2}),
                         layout_name);

// A SIGTERM on one rank stops every rank after the same step, with a checkpoint; the same
// command then goes on as if nothing had happened.
TEST(ExpertParallelRun, ASignalStopsEveryRankAndTheResumeGoesOnAsIfUninterrupted) {
  Sandbox box;
  TrainConfig c = box.config();
  c.expert_parallel = 2;
  c.steps = 5;
  c.run_dir = box.config().run_dir + "_straight";
  const std::vector<Trace> straight = run_parallel(c, 2);
  c.run_dir = box.config().run_dir + "_stopped";
  std::vector<RunResult> stopped(2);
  dist::run_threads(2, [&](dist::Communicator& comm) {
    stopped[size_t(comm.rank())] = run_training(c, comm, [&](const StepRecord& s) {
      if (s.step == 3 && comm.rank() == 1) std::raise(SIGTERM);
    });
  });
  for (const RunResult& r : stopped) {
    EXPECT_EQ(r.interrupted_by, SIGTERM);
    ASSERT_EQ(r.steps.size(), 3u);
  }
  const std::vector<Trace> resumed = run_parallel(c, 2);
  ASSERT_EQ(resumed[0].steps.size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_EQ(resumed[0].steps[s].loss, straight[0].steps[3 + s].loss) << "step " << 4 + s;
    EXPECT_EQ(resumed[0].steps[s].lambda, straight[0].steps[3 + s].lambda) << "step " << 4 + s;
    for (int rank = 0; rank < 2; ++rank)
      EXPECT_EQ(resumed[size_t(rank)].grads[s], straight[size_t(rank)].grads[3 + s])
          << "rank " << rank << ", step " << 4 + s;
  }
}

// ZeRO-1 (dist.zero1): the moments sharded over the ranks change nothing but memory — AdamW
// treats every element alone — so the run is bit for bit the unsharded data-parallel run, and
// its checkpoint holds the same whole moments.
// Two runs' checkpoints of `step`: the same tensors, in the same order, bit for bit.
void expect_same_checkpoint(const std::string& run_a, const std::string& run_b, int step) {
  const auto ckpt = [&](const std::string& run) {
    char dir[32];
    std::snprintf(dir, sizeof dir, "step_%08d", step);
    return load_checkpoint((std::filesystem::path(run) / "checkpoints" / dir).string());
  };
  const Checkpoint a = ckpt(run_a), b = ckpt(run_b);
  ASSERT_EQ(a.optimizer.size(), b.optimizer.size());
  for (size_t i = 0; i < a.optimizer.size(); ++i) {
    EXPECT_EQ(b.optimizer[i].name(), a.optimizer[i].name());
    EXPECT_EQ(b.optimizer[i].to_vector<float>(), a.optimizer[i].to_vector<float>()) << a.optimizer[i].name();
  }
  ASSERT_EQ(a.model.size(), b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i)
    EXPECT_EQ(b.model[i].to_vector<float>(), a.model[i].to_vector<float>()) << a.model[i].name();
}

class Zero1 : public ::testing::TestWithParam<int> {};

TEST_P(Zero1, IsBitForBitTheUnshardedDataParallelRun) {
  const int world = GetParam();
  Sandbox box;
  TrainConfig c = box.config();
  c.steps = 5;
  c.grad_accum = 2;
  c.run_dir = box.config().run_dir + "_dp";
  const std::vector<Trace> dp = run_parallel(c, world);
  c.zero1 = true;
  c.run_dir = box.config().run_dir + "_zero1";
  const std::vector<Trace> zero = run_parallel(c, world);
  for (int rank = 0; rank < world; ++rank) {
    ASSERT_EQ(zero[size_t(rank)].steps.size(), dp[0].steps.size());
    for (size_t s = 0; s < dp[0].steps.size(); ++s) {
      EXPECT_EQ(zero[size_t(rank)].steps[s].loss, dp[0].steps[s].loss) << "rank " << rank << " step " << s + 1;
      EXPECT_EQ(zero[size_t(rank)].steps[s].lambda, dp[0].steps[s].lambda);
      EXPECT_EQ(zero[size_t(rank)].grads[s], dp[0].grads[s]) << "rank " << rank << " step " << s + 1;
    }
  }
  expect_same_checkpoint(box.config().run_dir + "_dp", box.config().run_dir + "_zero1", 5);
}

INSTANTIATE_TEST_SUITE_P(World, Zero1, ::testing::Values(2, 3));

TEST(Zero1Run, AResumeRestoresEachRanksSliceOfTheMoments) {
  Sandbox box;
  TrainConfig c = box.config();
  c.zero1 = true;
  c.steps = 5;
  c.run_dir = box.config().run_dir + "_straight";
  const std::vector<Trace> straight = run_parallel(c, 2);
  c.run_dir = box.config().run_dir + "_stopped";
  dist::run_threads(2, [&](dist::Communicator& comm) {
    run_training(c, comm, [&](const StepRecord& s) {
      if (s.step == 2 && comm.rank() == 0) std::raise(SIGTERM);
    });
  });
  const std::vector<Trace> resumed = run_parallel(c, 2);
  ASSERT_EQ(resumed[0].steps.size(), 3u);
  for (size_t s = 0; s < 3; ++s) {
    EXPECT_EQ(resumed[0].steps[s].loss, straight[0].steps[2 + s].loss) << "step " << 3 + s;
    EXPECT_EQ(resumed[1].grads[s], straight[1].grads[2 + s]) << "step " << 3 + s;
  }
}

// ZeRO-1 with expert parallelism: the replicated parameters' moments sharded over the job, each
// expert block's over its replicas (none when P = W). Still bit for bit the run without ZeRO-1,
// a checkpoint with the same whole moments in the same order, and a resume that goes on as if
// uninterrupted.
class Zero1ExpertParallel : public ::testing::TestWithParam<Layout> {};

TEST_P(Zero1ExpertParallel, IsBitForBitTheRunWithoutIt) {
  const int world = GetParam().world;
  Sandbox box;
  TrainConfig c = box.config();  // E = 4
  c.steps = 5;
  c.expert_parallel = GetParam().expert_parallel;
  c.bucket_mb = 0.002;
  c.run_dir = box.config().run_dir + "_ep";
  const std::vector<Trace> ep = run_parallel(c, world);
  c.zero1 = true;
  c.run_dir = box.config().run_dir + "_zero1";
  const std::vector<Trace> zero = run_parallel(c, world);
  for (int rank = 0; rank < world; ++rank) {
    const Trace &a = zero[size_t(rank)], &b = ep[size_t(rank)];
    ASSERT_EQ(a.steps.size(), b.steps.size());
    for (size_t s = 0; s < b.steps.size(); ++s) {
      EXPECT_EQ(a.steps[s].loss, b.steps[s].loss) << "rank " << rank << " step " << s + 1;
      EXPECT_EQ(a.steps[s].lambda, b.steps[s].lambda);
      EXPECT_EQ(a.grads[s], b.grads[s]) << "rank " << rank << " step " << s + 1;
    }
  }
  expect_same_checkpoint(box.config().run_dir + "_ep", box.config().run_dir + "_zero1", 5);

  // Stopped after step 2 and resumed: the same last three steps, on every rank.
  c.run_dir = box.config().run_dir + "_stopped";
  dist::run_threads(world, [&](dist::Communicator& comm) {
    run_training(c, comm, [&](const StepRecord& s) {
      if (s.step == 2 && comm.rank() == world - 1) std::raise(SIGTERM);
    });
  });
  const std::vector<Trace> resumed = run_parallel(c, world);
  for (int rank = 0; rank < world; ++rank) {
    ASSERT_EQ(resumed[size_t(rank)].steps.size(), 3u);
    for (size_t s = 0; s < 3; ++s) {
      EXPECT_EQ(resumed[size_t(rank)].steps[s].loss, zero[size_t(rank)].steps[2 + s].loss)
          << "rank " << rank << " step " << 3 + s;
      EXPECT_EQ(resumed[size_t(rank)].grads[s], zero[size_t(rank)].grads[2 + s])
          << "rank " << rank << " step " << 3 + s;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, Zero1ExpertParallel,
                         ::testing::Values(Layout{2, 2}, Layout{4, 2}),
                         layout_name);

}  // namespace
}  // namespace remoe::train
