// The NCCL communicator with one rank against the thread implementation, and its rank-order
// reduction kernel against the CPU's bit for bit. Skips without a visible GPU or without NCCL.
// (More ranks need more GPUs or processes: launch remoe itself with torchrun for that.)
#include <gmock/gmock.h>

#include <cstring>

#include "autodiff/device.h"
#include "dist/nccl.h"
#include "dist/thread_group.h"
#include "tests/test_util.h"
#include "tests/train/sandbox.h"
#include "train/trainer.h"

namespace remoe::test {
namespace {

using dist::Communicator;
using dist::ReduceOp;
using ::testing::HasSubstr;

bool have_nccl_gpu() { return device::cuda_available() && dist::nccl_built(); }

// Bitwise equality of two tensors' bytes (after a copy to the host).
::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << shape_str(a.shape()) << " " << dtype_name(a.dtype())
                                         << " vs " << shape_str(b.shape()) << " "
                                         << dtype_name(b.dtype());
  const Tensor ha = a.to(Device::cpu), hb = b.to(Device::cpu);
  if (std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) != 0)
    return ::testing::AssertionFailure() << "bytes differ";
  return ::testing::AssertionSuccess();
}

Tensor random(const Shape& shape, DType dtype, uint64_t seed) {
  Rng rng(seed);
  if (dtype == DType::i32) {
    std::vector<int32_t> v(size_t(shape_numel(shape)));
    for (auto& x : v) x = int32_t(rng.below(2001)) - 1000;
    return Tensor::from_vector<int32_t>(shape, v);
  }
  return randn(shape, dtype, rng, 100.0);
}

// One rank's result of `op` on the thread group and on NCCL, from the same CPU input.
template <typename Op>
void expect_same_as_threads(Communicator& nccl, Op op) {
  Tensor on_threads;
  dist::run_threads(1, [&](Communicator& comm) { on_threads = op(comm, Device::cpu); });
  const Tensor on_gpu = op(nccl, Device::cuda);
  EXPECT_TRUE(same_bits(on_gpu, on_threads));
}

class GpuNccl : public ::testing::TestWithParam<bool> {  // ordered reductions or NCCL's own
 protected:
  static void TearDownTestSuite() {
    ordered_.reset();
    native_.reset();
  }
  void SetUp() override {
    if (!device::cuda_available()) GTEST_SKIP() << "no CUDA device visible";
    if (!dist::nccl_built()) GTEST_SKIP() << "built without NCCL";
    auto& comm = GetParam() ? ordered_ : native_;
    if (!comm) {
      dist::NcclOptions options;
      options.ordered_reductions = GetParam();
      comm = dist::nccl_communicator(dist::LaunchInfo{}, options);
    }
  }
  Communicator& nccl() { return GetParam() ? *ordered_ : *native_; }

  static inline std::unique_ptr<Communicator> ordered_, native_;
};

TEST_P(GpuNccl, OneRankWorld) {
  EXPECT_EQ(nccl().rank(), 0);
  EXPECT_EQ(nccl().world_size(), 1);
  EXPECT_EQ(nccl().device(), Device::cuda);
}

// A split of a world of one is a world of one over its own NCCL communicator (ncclCommSplit).
TEST_P(GpuNccl, SplitOfOneRankIsAWorkingCommunicator) {
  const auto sub = nccl().split(5, 0);
  EXPECT_EQ(sub->rank(), 0);
  EXPECT_EQ(sub->world_size(), 1);
  EXPECT_EQ(sub->device(), Device::cuda);
  const Tensor t = Tensor::from_vector<float>({3}, {1, 2, 3}).to(Device::cuda);
  sub->all_reduce(t, ReduceOp::mean);
  sub->barrier();
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  EXPECT_THAT(error_of([&] { nccl().split(-1, 0); }), HasSubstr("color -1 is negative"));
}

// Reductions started on the side stream see what remoe's stream wrote before the start, and
// remoe's stream sees their sums after wait_started() (with one rank a sum is the identity, so
// a wrong order shows as the unscaled or stale values).
TEST_P(GpuNccl, StartedReductionsAreOrderedWithRemoesStream) {
  const Tensor x = random({100000}, DType::f32, 4).to(Device::cuda);
  std::vector<Tensor> started;
  for (int i = 1; i <= 3; ++i) {
    started.push_back(ops::scale(x, double(i)));  // written by a kernel on remoe's stream
    nccl().start_all_reduce(started.back(), i == 2 ? ReduceOp::mean : ReduceOp::sum);
  }
  nccl().wait_started();
  nccl().wait_started();  // nothing started: no effect
  const std::vector<float> want = x.to_vector<float>();
  for (int i = 1; i <= 3; ++i) {
    const std::vector<float> got = started[size_t(i - 1)].to_vector<float>();
    for (size_t j = 0; j < want.size(); j += 997) ASSERT_EQ(got[j], want[j] * float(i)) << i;
  }
}

TEST_P(GpuNccl, AllReduceMatchesThreads) {
  for (DType dtype : {DType::f32, DType::f64, DType::i32})
    for (const Shape& shape : {Shape{1000}, Shape{3, 5}, Shape{}, Shape{0, 4}})
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean}) {
        if (op == ReduceOp::mean && dtype == DType::i32) continue;
        const Tensor x = random(shape, dtype, 1);
        expect_same_as_threads(nccl(), [&](Communicator& comm, Device dev) {
          const Tensor t = x.to(dev);
          comm.all_reduce(t, op);
          return t;
        });
      }
}

TEST_P(GpuNccl, ReduceScatterAllGatherBroadcastMatchThreads) {
  for (DType dtype : {DType::f32, DType::f64, DType::i32}) {
    const Tensor x = random({5, 3}, dtype, 2);
    expect_same_as_threads(nccl(), [&](Communicator& comm, Device dev) {
      const Tensor out = Tensor::zeros({5, 3}, dtype, dev);
      comm.reduce_scatter(out, x.to(dev), ReduceOp::sum);
      return out;
    });
    expect_same_as_threads(nccl(), [&](Communicator& comm, Device dev) {
      const Tensor out = Tensor::zeros({5, 3}, dtype, dev);
      comm.all_gather(out, x.to(dev));
      return out;
    });
    expect_same_as_threads(nccl(), [&](Communicator& comm, Device dev) {
      const Tensor t = x.to(dev);
      comm.broadcast(t, 0);
      return t;
    });
  }
}

TEST_P(GpuNccl, AllToAllAndExchangeCountsMatchThreads) {
  const Tensor x = random({7, 4}, DType::f32, 3);
  for (int64_t rows : {7, 0}) {
    const Tensor in = rows ? x : Tensor::empty({0, 4}, DType::f32);
    expect_same_as_threads(nccl(), [&](Communicator& comm, Device dev) {
      const std::vector<int64_t> recv = comm.exchange_counts({rows});
      EXPECT_EQ(recv, std::vector<int64_t>{rows});
      const Tensor out = Tensor::zeros({rows, 4}, DType::f32, dev);
      comm.all_to_all(out, recv, in.to(dev), {rows});
      return out;
    });
  }
}

TEST_P(GpuNccl, BarrierReturnsAndErrorsNameTheCollective) {
  nccl().barrier();
  const Tensor on_cpu = Tensor::zeros({2}, DType::f32);
  EXPECT_THAT(error_of([&] { nccl().all_reduce(on_cpu); }),
              HasSubstr("all_reduce: rank 0: a cpu tensor (2) given to NCCL"));
  EXPECT_THAT(error_of([&] { nccl().broadcast(on_cpu.to(Device::cuda), 1); }),
              HasSubstr("root 1 is not a rank of this group of 1"));
  EXPECT_THAT(error_of([&] {
                nccl().all_to_all(Tensor::zeros({2}, DType::f32, Device::cuda), {3},
                                  Tensor::zeros({3}, DType::f32, Device::cuda), {3});
              }),
              HasSubstr("out (2) has 2 rows but recv_counts add up to 3"));
  EXPECT_THAT(error_of([&] {
                nccl().all_to_all(Tensor::zeros({2}, DType::f32, Device::cuda), {2},
                                  Tensor::zeros({3}, DType::f32, Device::cuda), {3});
              }),
              HasSubstr("rank 0 sends 3 rows to itself but expects 2"));
}

INSTANTIATE_TEST_SUITE_P(Reductions, GpuNccl, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "ordered" : "native"; });

// --- the rank-order kernel --------------------------------------------------------------------

class GpuReduceBlocks : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (!have_nccl_gpu()) GTEST_SKIP() << "no CUDA device visible, or built without NCCL";
  }
};

TEST_P(GpuReduceBlocks, MatchesTheCpuBitForBit) {
  const int world = GetParam();
  for (DType dtype : {DType::f32, DType::f64, DType::i32})
    for (int64_t n : {1, 1000, 70001})
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean}) {
        if (op == ReduceOp::mean && dtype == DType::i32) continue;
        // Per-block scales 1e8 apart make the sum depend on the order of additions.
        Tensor blocks = random({world, n}, dtype, uint64_t(world * 7 + n));
        if (dtype == DType::f32) {
          float* b = blocks.data<float>();
          for (int p = 0; p < world; ++p)
            for (int64_t i = 0; i < n; ++i) b[p * n + i] *= (p % 2 ? 1e-3f : 1e5f);
        }
        std::vector<const void*> ptrs;
        for (int p = 0; p < world; ++p)
          ptrs.push_back(static_cast<const char*>(blocks.raw()) +
                         size_t(p * n) * dtype_size(dtype));
        const Tensor expected = Tensor::empty({n}, dtype);
        dist::detail::reduce_blocks_cpu(expected.raw(), ptrs, n, dtype, op);
        const Tensor got = Tensor::zeros({n}, dtype, Device::cuda);
        dist::detail::reduce_blocks_cuda(got, blocks.to(Device::cuda), op);
        EXPECT_TRUE(same_bits(got, expected))
            << "W " << world << " n " << n << " " << dtype_name(dtype) << " "
            << dist::reduce_op_name(op);
      }
}

INSTANTIATE_TEST_SUITE_P(World, GpuReduceBlocks, ::testing::Values(1, 2, 3, 4, 8));

// Two runs' step records are equal bit for bit: loss, λ, gradient norm, expert loads.
void expect_same_steps(const std::vector<train::StepRecord>& got,
                       const std::vector<train::StepRecord>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t s = 0; s < want.size(); ++s) {
    EXPECT_EQ(got[s].loss, want[s].loss) << "step " << s + 1;
    EXPECT_EQ(got[s].lambda, want[s].lambda) << "step " << s + 1;
    EXPECT_EQ(got[s].grad_norm, want[s].grad_norm) << "step " << s + 1;
    EXPECT_EQ(got[s].expert_load, want[s].expert_load) << "step " << s + 1;
  }
}

// Issue 8's one-GPU check: a data-parallel training run over a one-rank NCCL communicator
// (gradient buckets, sums and the signal check all through NCCL on the GPU) is bit for bit the
// run of one process. The model trains on the CPU until the op layer dispatches to CUDA.
TEST(GpuNcclTraining, OneRankDataParallelRunEqualsTheNonDistributedRun) {
  if (!have_nccl_gpu()) GTEST_SKIP() << "no CUDA device visible, or built without NCCL";
  train::Sandbox box;
  train::TrainConfig c = box.config();
  c.steps = 4;
  c.grad_accum = 2;
  c.bucket_mb = 0.002;  // several buckets
  std::vector<train::StepRecord> ref, nccl;
  train::run_training(c, [&](const train::StepRecord& r) { ref.push_back(r); });
  const std::unique_ptr<Communicator> comm = dist::nccl_communicator(dist::LaunchInfo{});
  c.run_dir = box.config().run_dir + "_nccl";
  train::run_training(c, *comm, [&](const train::StepRecord& r) { nccl.push_back(r); });
  expect_same_steps(nccl, ref);
}

// The same on the GPU, with ZeRO-1 (the moments' slices and the parameters' all-gather on the
// device): a one-rank NCCL job on the GPU is bit for bit the plain GPU run (f32).
TEST(GpuNcclTraining, OneRankZero1RunOnTheGpuEqualsThePlainGpuRun) {
  if (!have_nccl_gpu()) GTEST_SKIP() << "no CUDA device visible, or built without NCCL";
  train::Sandbox box;
  train::TrainConfig c = box.config();
  c.steps = 4;
  c.device = train::DeviceChoice::cuda;
  c.precision = train::PrecisionChoice::f32;
  std::vector<train::StepRecord> ref, nccl;
  train::run_training(c, [&](const train::StepRecord& r) { ref.push_back(r); });
  const std::unique_ptr<Communicator> comm = dist::nccl_communicator(dist::LaunchInfo{});
  c.zero1 = true;
  c.run_dir = box.config().run_dir + "_zero1";
  train::run_training(c, *comm, [&](const train::StepRecord& r) { nccl.push_back(r); });
  expect_same_steps(nccl, ref);
}

}  // namespace
}  // namespace remoe::test
