// GradBuckets: buckets formed in reverse parameter order up to the byte budget (and never
// across dtypes), reduced strictly in order as their gradients become final, missing
// gradients taking part as zeros, every rank ending with the rank-order sum, and the started
// reductions joined before any gradient is read back.
#include "dist/data_parallel.h"

#include <gtest/gtest.h>

#include "dist/thread_group.h"

namespace remoe::dist {
namespace {

Tensor param(int64_t n, DType dtype = DType::f32) {
  Tensor t = Tensor::zeros({n}, dtype);
  t.set_requires_grad(true);
  return t;
}

TEST(GradBuckets, FillsBucketsInReverseOrderUpToTheBudgetAndSplitsAtADtypeChange) {
  Single single;
  // 40 bytes each; f64 one of 80.
  const std::vector<Tensor> params = {param(10), param(10), param(10, DType::f64), param(10),
                                      param(10)};
  const GradBuckets b(single, params, 80);
  const std::vector<std::vector<size_t>> expected = {{4, 3}, {2}, {1, 0}};
  EXPECT_EQ(b.buckets(), expected);
  // A parameter larger than the budget gets a bucket of its own.
  const GradBuckets big(single, {param(100), param(1)}, 80);
  EXPECT_EQ(big.buckets(), (std::vector<std::vector<size_t>>{{1}, {0}}));
}

TEST(GradBuckets, ReducesStrictlyInOrderAsGradientsBecomeFinal) {
  Single single;
  const std::vector<Tensor> params = {param(10), param(10), param(10)};
  for (const Tensor& p : params) p.set_grad(Tensor::full({10}, 1.0, DType::f32));
  GradBuckets b(single, params, 40);  // one parameter per bucket: {2}, {1}, {0}
  b.ready(0);                         // the last bucket: waits for the two before it
  EXPECT_EQ(b.reductions(), 0);
  b.ready(2);
  EXPECT_EQ(b.reductions(), 1);
  b.ready(1);  // releases bucket {1} and then {0}
  EXPECT_EQ(b.reductions(), 3);
  b.ready(1);  // reported twice: no effect
  EXPECT_EQ(b.reductions(), 3);
  b.finish();
  EXPECT_EQ(b.reductions(), 3);
  b.finish();  // a step where nobody reported anything: finish reduces it all
  EXPECT_EQ(b.reductions(), 6);
}

TEST(GradBuckets, EveryRankEndsWithTheRankOrderSumAndMissingGradientsCountAsZero) {
  constexpr int kWorld = 3;
  run_threads(kWorld, [](Communicator& comm) {
    const int r = comm.rank();
    const std::vector<Tensor> params = {param(3), param(2), param(4, DType::f64)};
    // Gradients rank r: p0 = (r+1)·[1, 2, 3]; p1 only on rank 1; p2 = r + 0.5.
    // p0's gradient is a view of another tensor's storage (as a reshape's gradient may be).
    const Tensor other = Tensor::from_vector<float>({1, 3}, {float(r + 1), float(2 * (r + 1)), float(3 * (r + 1))});
    params[0].set_grad(make_view(other, {3}));
    if (r == 1) params[1].set_grad(Tensor::from_vector<float>({2}, {7.0f, -7.0f}));
    params[2].set_grad(Tensor::full({4}, r + 0.5, DType::f64));
    const std::vector<float> before = other.to_vector<float>();
    GradBuckets b(comm, params, 12);
    b.ready(2);
    b.finish();
    EXPECT_EQ(params[0].grad().to_vector<float>(), (std::vector<float>{6, 12, 18}));
    ASSERT_TRUE(params[1].grad().defined()) << "rank " << r;
    EXPECT_EQ(params[1].grad().to_vector<float>(), (std::vector<float>{7, -7}));
    EXPECT_EQ(params[2].grad().to_vector<double>(), std::vector<double>(4, 0.5 + 1.5 + 2.5));
    // The storage p0's gradient shared with `other` was not written through.
    EXPECT_EQ(other.to_vector<float>(), before);
  });
}

// A communicator that starts reductions the way a GPU one does, late: start_all_reduce only
// queues them, and wait_started() reduces. GradBuckets must copy nothing back before the join.
class DeferredCommunicator final : public Communicator {
 public:
  explicit DeferredCommunicator(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int world_size() const override { return inner_.world_size(); }
  Device device() const override { return inner_.device(); }
  void all_reduce(const Tensor& t, ReduceOp op) override { inner_.all_reduce(t, op); }
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
    inner_.reduce_scatter(out, in, op);
  }
  void all_gather(const Tensor& out, const Tensor& in) override { inner_.all_gather(out, in); }
  void all_to_all(const Tensor& out, const std::vector<int64_t>& recv_counts, const Tensor& in,
                  const std::vector<int64_t>& send_counts) override {
    inner_.all_to_all(out, recv_counts, in, send_counts);
  }
  void broadcast(const Tensor& t, int root) override { inner_.broadcast(t, root); }
  void barrier() override { inner_.barrier(); }
  std::unique_ptr<Communicator> split(int color, int key) override { return inner_.split(color, key); }
  void start_all_reduce(const Tensor& t, ReduceOp op) override { queued_.push_back({t, op}); }
  void wait_started() override {
    for (const auto& [t, op] : queued_) inner_.all_reduce(t, op);
    joins_ += !queued_.empty();
    queued_.clear();
  }
  size_t queued() const { return queued_.size(); }
  int joins() const { return joins_; }

 private:
  Communicator& inner_;
  std::vector<std::pair<Tensor, ReduceOp>> queued_;
  int joins_ = 0;
};

TEST(GradBuckets, StartsReductionsAsBucketsFillAndJoinsThemBeforeCopyingBack) {
  run_threads(2, [](Communicator& threads) {
    DeferredCommunicator comm(threads);
    const int r = comm.rank();
    const std::vector<Tensor> params = {param(2), param(2)};
    GradBuckets b(comm, params, 8);  // one parameter per bucket: {1}, {0}
    for (int step = 0; step < 2; ++step) {
      for (const Tensor& p : params) p.set_grad(Tensor::full({2}, r + 1.0 + step, DType::f32));
      b.ready(1);
      EXPECT_EQ(comm.queued(), 1u) << "started as soon as its bucket is complete";
      EXPECT_EQ(params[1].grad().to_vector<float>(), std::vector<float>(2, float(r + 1 + step)))
          << "nothing is written back before the join";
      b.finish();
      EXPECT_EQ(comm.queued(), 0u);
      EXPECT_EQ(comm.joins(), step + 1);
      for (const Tensor& p : params)
        EXPECT_EQ(p.grad().to_vector<float>(), std::vector<float>(2, float(3 + 2 * step)));
    }
  });
}

}  // namespace
}  // namespace remoe::dist
