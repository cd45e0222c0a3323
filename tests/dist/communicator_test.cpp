// Collectives on W threads (ThreadGroup) against hand computations, the rank-order determinism
// contract, failures that must not hang (a rank that throws, leaves early or is late), argument
// errors, and Single.
#include <gmock/gmock.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <future>
#include <limits>
#include <thread>

#include "dist/thread_group.h"
#include "tests/test_util.h"
#include "tests/dist/run_guarded.h"

namespace remoe::test {
namespace {

using dist::Communicator;
using dist::ReduceOp;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string message_of(const std::exception_ptr& e) {
  if (!e) return "(no exception)";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  }
}

// A distinct value for (rank, element): integers small enough to be exact in every dtype.
double value(int rank, int64_t i) { return 100.0 * (rank + 1) + double(i % 50); }

Tensor filled(const Shape& shape, DType dtype, const std::function<double(int64_t)>& f) {
  std::vector<double> v(size_t(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = f(int64_t(i));
  switch (dtype) {
    case DType::f64: return Tensor::from_vector<double>(shape, v);
    case DType::f32: return Tensor::from_vector<float>(shape, {v.begin(), v.end()});
    case DType::i32: return Tensor::from_vector<int32_t>(shape, {v.begin(), v.end()});
    case DType::bf16: return ops::cast(Tensor::from_vector<double>(shape, v), DType::bf16);
  }
  return {};
}

class Collectives : public ::testing::TestWithParam<int> {
 protected:
  int world() const { return GetParam(); }
};

TEST_P(Collectives, AllReduceSumAndMeanMatchHandComputation) {
  const int w = world();
  for (DType dtype : {DType::f32, DType::f64, DType::i32})
    for (const Shape& shape : {Shape{5, 3}, Shape{}, Shape{0, 4}})
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean}) {
        if (op == ReduceOp::mean && dtype == DType::i32) continue;
        run_ok(w, [&](Communicator& comm) {
          const int r = comm.rank();
          const Tensor t = filled(shape, dtype, [&](int64_t i) { return value(r, i); });
          comm.all_reduce(t, op);
          std::vector<double> expected(size_t(t.numel()));
          for (size_t i = 0; i < expected.size(); ++i) {
            for (int p = 0; p < w; ++p) expected[i] += value(p, int64_t(i));
            if (op == ReduceOp::mean) expected[i] /= w;
          }
          // Means of integers over W ≤ 4 are exact in binary except /3, which rounds in f32.
          const double tol = dtype == DType::f32 ? 1e-5 : 1e-12;
          EXPECT_TRUE(all_close(values(t), expected, 0, tol))
              << "rank " << r << " " << dtype_name(dtype) << " " << shape_str(shape) << " "
              << dist::reduce_op_name(op);
        });
      }
}

TEST_P(Collectives, ReduceScatterMatchesHandComputation) {
  const int w = world();
  for (int64_t n : {2, 0})
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::mean})
      run_ok(w, [&](Communicator& comm) {
        const int r = comm.rank();
        const Tensor in = filled({w * n, 3}, DType::f64, [&](int64_t i) { return value(r, i); });
        const Tensor out = Tensor::full({n, 3}, -1, DType::f64);
        comm.reduce_scatter(out, in, op);
        std::vector<double> expected(size_t(n * 3));
        for (size_t i = 0; i < expected.size(); ++i) {
          for (int p = 0; p < w; ++p) expected[i] += value(p, r * n * 3 + int64_t(i));
          if (op == ReduceOp::mean) expected[i] /= w;
        }
        EXPECT_TRUE(all_close(values(out), expected, 0, 1e-15)) << "rank " << r << " n " << n;
      });
}

TEST_P(Collectives, AllGatherConcatenatesInRankOrder) {
  const int w = world();
  for (DType dtype : {DType::f32, DType::i32, DType::bf16})
    for (int64_t n : {2, 0})
      run_ok(w, [&](Communicator& comm) {
        const int r = comm.rank();
        const Tensor in = filled({n, 3}, dtype, [&](int64_t i) { return value(r, i); });
        const Tensor out = Tensor::full({w * n, 3}, -1, dtype);
        comm.all_gather(out, in);
        std::vector<double> expected;  // what each rank sent, as stored in dtype
        for (int p = 0; p < w; ++p) {
          const auto sent = values(filled({n, 3}, dtype, [&](int64_t i) { return value(p, i); }));
          expected.insert(expected.end(), sent.begin(), sent.end());
        }
        EXPECT_TRUE(all_close(values(out), expected, 0, 0)) << "rank " << r << " n " << n;
      });
}

// Rank r sends (r + 2p) mod 3 rows to p: uneven, with zeros, and rank r's row k for p holds
// 1000·r + 100·p + k so the receiver can tell where each row came from.
int64_t rows_from_to(int from, int to) { return (from + 2 * to) % 3; }

TEST_P(Collectives, AllToAllWithUnevenAndZeroCounts) {
  const int w = world();
  run_ok(w, [&](Communicator& comm) {
    const int r = comm.rank();
    constexpr int64_t kCols = 2;
    std::vector<int64_t> send, recv_by_hand;
    std::vector<double> in_values, expected;
    for (int p = 0; p < w; ++p) {
      send.push_back(rows_from_to(r, p));
      recv_by_hand.push_back(rows_from_to(p, r));
      for (int64_t k = 0; k < send.back(); ++k)
        for (int64_t c = 0; c < kCols; ++c) in_values.push_back(1000 * r + 100 * p + k + c * 0.5);
      for (int64_t k = 0; k < recv_by_hand.back(); ++k)
        for (int64_t c = 0; c < kCols; ++c) expected.push_back(1000 * p + 100 * r + k + c * 0.5);
    }
    const std::vector<int64_t> recv = comm.exchange_counts(send);
    EXPECT_EQ(recv, recv_by_hand) << "rank " << r;
    const Tensor in = Tensor::from_vector<double>({int64_t(in_values.size()) / kCols, kCols},
                                                  in_values);
    const Tensor out = Tensor::full({int64_t(expected.size()) / kCols, kCols}, -1, DType::f64);
    comm.all_to_all(out, recv, in, send);
    EXPECT_EQ(values(out), expected) << "rank " << r;
  });
}

TEST_P(Collectives, AllToAllWithNothingToSend) {
  const int w = world();
  run_ok(w, [&](Communicator& comm) {
    const std::vector<int64_t> zeros(size_t(w), 0);
    const Tensor in = Tensor::empty({0, 4}, DType::f32), out = Tensor::empty({0, 4}, DType::f32);
    comm.all_to_all(out, zeros, in, zeros);
    EXPECT_EQ(out.numel(), 0);
  });
}

TEST_P(Collectives, BroadcastCopiesTheRootsTensor) {
  const int w = world();
  for (int root : {0, w - 1})
    for (DType dtype : {DType::f64, DType::i32, DType::bf16})
      run_ok(w, [&](Communicator& comm) {
        const int r = comm.rank();
        const Tensor t = filled({2, 3}, dtype, [&](int64_t i) { return value(r, i); });
        comm.broadcast(t, root);
        const auto expected =
            values(filled({2, 3}, dtype, [&](int64_t i) { return value(root, i); }));
        EXPECT_EQ(values(t), expected) << "rank " << r << " root " << root;
      });
}

TEST_P(Collectives, BarrierOrdersWritesBeforeIt) {
  const int w = world();
  std::vector<int> arrived(size_t(w), 0);
  for (int round = 1; round <= 3; ++round)
    run_ok(w, [&](Communicator& comm) {
      arrived[size_t(comm.rank())] = round;
      comm.barrier();
      for (int p = 0; p < w; ++p) EXPECT_EQ(arrived[size_t(p)], round) << "rank " << p;
      comm.barrier();  // nobody starts the next round's writes while a peer still reads
    });
}

TEST_P(Collectives, RankAndWorldSize) {
  const int w = world();
  std::vector<int> seen(size_t(w), 0);
  run_ok(w, [&](Communicator& comm) {
    EXPECT_EQ(comm.world_size(), w);
    EXPECT_EQ(comm.device(), Device::cpu);
    ++seen[size_t(comm.rank())];
  });
  for (int p = 0; p < w; ++p) EXPECT_EQ(seen[size_t(p)], 1) << "rank " << p;
}

// --- determinism -------------------------------------------------------------------------

// Values whose sum depends on the order of additions: 1e8 + 1 rounds back to 1e8 in f32.
float tricky(int rank, int64_t i) {
  static const float kBase[] = {1e8f, 1.0f, -1e8f, 1.0f};
  return kBase[rank % 4] * float(1 + i % 7) + float(rank) * 0.3f;
}

TEST_P(Collectives, ReductionsAreRankOrderedAndBitIdenticalOnEveryRank) {
  const int w = world();
  constexpr int64_t kN = 64;
  // The contract, computed here: ((x_0 + x_1) + x_2) + ... in f32, then / W for the mean.
  std::vector<float> sum(kN), mean(kN);
  for (int64_t i = 0; i < kN; ++i) {
    float acc = tricky(0, i);
    for (int p = 1; p < w; ++p) acc = acc + tricky(p, i);
    sum[size_t(i)] = acc;
    mean[size_t(i)] = acc / float(w);
  }
  if (w == 4) {  // another order gives another sum: the test can tell the order apart
    float reverse = tricky(3, 0);
    for (int p = 2; p >= 0; --p) reverse = reverse + tricky(p, 0);
    ASSERT_NE(sum[0], reverse);
  }
  for (int run = 0; run < 2; ++run)
    run_ok(w, [&](Communicator& comm) {
      const int r = comm.rank();
      std::vector<float> x(kN);
      for (int64_t i = 0; i < kN; ++i) x[size_t(i)] = tricky(r, i);
      const Tensor s = Tensor::from_vector<float>({kN}, x), m = s.clone();
      comm.all_reduce(s, ReduceOp::sum);
      comm.all_reduce(m, ReduceOp::mean);
      std::vector<float> wide;  // W copies of x: each rank's reduce_scatter block is sum
      for (int p = 0; p < w; ++p) wide.insert(wide.end(), x.begin(), x.end());
      const Tensor out = Tensor::empty({kN}, DType::f32);
      comm.reduce_scatter(out, Tensor::from_vector<float>({w * kN}, wide), ReduceOp::sum);
      const auto bits_equal = [](const std::vector<float>& a, const std::vector<float>& b) {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
      };
      EXPECT_TRUE(bits_equal(s.to_vector<float>(), sum)) << "rank " << r << " run " << run;
      EXPECT_TRUE(bits_equal(m.to_vector<float>(), mean)) << "rank " << r << " run " << run;
      EXPECT_TRUE(bits_equal(out.to_vector<float>(), sum)) << "rank " << r << " run " << run;
    });
}

TEST(ThreadGroup, IntegerSumWrapsLikeTheGpu) {
  run_ok(2, [](Communicator& comm) {
    const Tensor t = Tensor::from_vector<int32_t>({1}, {std::numeric_limits<int32_t>::max()});
    comm.all_reduce(t);
    EXPECT_EQ(t.to_vector<int32_t>()[0], -2);  // 2·(2^31 − 1) mod 2^32
  });
}

INSTANTIATE_TEST_SUITE_P(World, Collectives, ::testing::Values(1, 2, 3, 4));

// --- failures end promptly -----------------------------------------------------------------

TEST(ThreadGroup, RankThatThrowsMakesPeersFailPromptly) {
  constexpr int kWorld = 3;
  std::vector<std::string> peer_errors(kWorld);
  const auto start = std::chrono::steady_clock::now();
  const std::exception_ptr e = run_guarded(kWorld, [&](Communicator& comm) {
    const Tensor t = Tensor::full({4}, 1, DType::f32);
    comm.all_reduce(t);  // one good collective first
    if (comm.rank() == 1) throw std::runtime_error("rank 1 ran out of data");
    try {
      comm.all_reduce(t);
    } catch (const Error& x) {
      peer_errors[size_t(comm.rank())] = x.what();
      throw;
    }
  }, 60s);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(message_of(e), "rank 1 ran out of data");  // the first exception, not a peer's
  EXPECT_LT(elapsed, 5s) << "peers waited for the 60 s timeout instead of the abort";
  for (int r : {0, 2}) {
    EXPECT_THAT(peer_errors[size_t(r)], HasSubstr("rank " + std::to_string(r) + ": all_reduce"));
    EXPECT_THAT(peer_errors[size_t(r)],
                HasSubstr("aborted (rank 1 threw: rank 1 ran out of data)"));
  }
}

TEST(ThreadGroup, RankThatThrowsBeforeAnyCollective) {
  const auto start = std::chrono::steady_clock::now();
  const std::exception_ptr e = run_guarded(4, [](Communicator& comm) {
    if (comm.rank() == 3) throw Error("bad config on rank 3");
    comm.barrier();
  }, 60s);
  EXPECT_EQ(message_of(e), "bad config on rank 3");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(ThreadGroup, RankThatReturnsEarlyMakesPeersFail) {
  const auto start = std::chrono::steady_clock::now();
  const std::exception_ptr e = run_guarded(3, [](Communicator& comm) {
    comm.barrier();
    if (comm.rank() == 2) return;  // skips the second collective
    comm.all_reduce(Tensor::zeros({2}, DType::f64));
  }, 60s);
  EXPECT_THAT(message_of(e), HasSubstr("rank 2 returned from its function while rank"));
  EXPECT_THAT(message_of(e), HasSubstr("waits for it in all_reduce"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(ThreadGroup, LateRankTimesOutNamingIt) {
  const auto start = std::chrono::steady_clock::now();
  const std::exception_ptr e = run_guarded(3, [](Communicator& comm) {
    if (comm.rank() == 1) std::this_thread::sleep_for(600ms);
    comm.barrier();
  }, 100ms);
  EXPECT_THAT(message_of(e), HasSubstr("waited more than 100 ms in barrier for rank(s) 1"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(ThreadGroup, DifferentCollectivesAreAnError) {
  const std::exception_ptr e = run_guarded(2, [](Communicator& comm) {
    if (comm.rank() == 0)
      comm.all_reduce(Tensor::zeros({2}, DType::f32));
    else
      comm.barrier();
  });
  EXPECT_THAT(message_of(e), HasSubstr("ranks called different collectives (rank 0: all_reduce, "
                                       "rank 1: barrier)"));
}

TEST(ThreadGroup, MismatchedArgumentsAcrossRanksAreErrors) {
  auto error = [](const std::function<void(Communicator&)>& fn) {
    return message_of(run_guarded(2, fn));
  };
  EXPECT_THAT(error([](Communicator& c) {
                c.all_reduce(Tensor::zeros({c.rank() + 1}, DType::f32));
              }),
              HasSubstr("all_reduce: rank 0 passes (1), rank 1 passes (2)"));
  EXPECT_THAT(error([](Communicator& c) {
                c.all_reduce(Tensor::zeros({2}, c.rank() ? DType::f64 : DType::f32));
              }),
              HasSubstr("all_reduce: rank 0 passes f32, rank 1 passes f64"));
  EXPECT_THAT(error([](Communicator& c) {
                c.all_reduce(Tensor::zeros({2}, DType::f32), c.rank() ? ReduceOp::mean
                                                                     : ReduceOp::sum);
              }),
              HasSubstr("rank 0 reduces with sum, rank 1 with mean"));
  EXPECT_THAT(error([](Communicator& c) { c.broadcast(Tensor::zeros({2}, DType::f32), c.rank()); }),
              HasSubstr("broadcast: rank 0 names root 0, rank 1 names root 1"));
  EXPECT_THAT(error([](Communicator& c) {
                // rank 0 sends 1 row to rank 1, but rank 1 expects 2 from it
                const std::vector<int64_t> send = {1, 1};
                const std::vector<int64_t> recv = {c.rank() ? 2 : 1, 1};
                c.all_to_all(Tensor::zeros({recv[0] + recv[1], 2}, DType::f32), recv,
                             Tensor::zeros({2, 2}, DType::f32), send);
              }),
              HasSubstr("all_to_all: rank 0 sends 1 rows to rank 1, which expects 2 "
                        "(recv_counts[0] on rank 1)"));
  EXPECT_THAT(error([](Communicator& c) {
                const std::vector<int64_t> one = {1, 1};
                const int64_t d = c.rank() + 2;
                c.all_to_all(Tensor::zeros({2, d}, DType::f32), one,
                             Tensor::zeros({2, d}, DType::f32), one);
              }),
              HasSubstr("rank 0 sends rows of (2, 2), rank 1 rows of (2, 3)"));
}

TEST(ThreadGroup, StaysAbortedAfterAFailure) {
  const dist::ThreadGroup group(2);
  const auto c0 = group.communicator(0);
  EXPECT_FALSE(group.aborted());
  group.abort("operator pressed stop");
  EXPECT_TRUE(group.aborted());
  EXPECT_THAT(error_of([&] { c0->barrier(); }),
              HasSubstr("rank 0: barrier failed: the group was aborted (operator pressed stop)"));
  group.abort("a second reason");
  EXPECT_THAT(error_of([&] { c0->all_reduce(Tensor::zeros({1}, DType::f32)); }),
              HasSubstr("(operator pressed stop)"));
}

TEST(ThreadGroup, ConstructionErrors) {
  EXPECT_THAT(error_of([] { dist::ThreadGroup g(0); }),
              HasSubstr("world size 0 is outside [1, 1024]"));
  EXPECT_THAT(error_of([] { dist::ThreadGroup g(2, 0ms); }), HasSubstr("must be positive"));
  EXPECT_THAT(error_of([] { dist::ThreadGroup(2).communicator(2); }),
              HasSubstr("rank 2 is not in [0, 2)"));
}

// --- argument checks (one rank sees them alone) ----------------------------------------------

TEST(CommunicatorChecks, BadArgumentsNameTheCollectiveRankAndShapes) {
  auto error = [](const std::function<void(Communicator&)>& fn) {
    return message_of(run_guarded(2, fn));
  };
  const auto f32 = [](const Shape& s) { return Tensor::zeros(s, DType::f32); };
  EXPECT_THAT(error([&](Communicator& c) {
                c.all_reduce(Tensor::zeros({2}, DType::i32), ReduceOp::mean);
              }),
              HasSubstr("the mean of an i32 tensor is not an integer"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_reduce(Tensor::zeros({2}, DType::bf16)); }),
              HasSubstr("cannot reduce a bf16 tensor"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_reduce(Tensor()); }),
              HasSubstr("t is an undefined tensor"));
  EXPECT_THAT(error([&](Communicator& c) { c.reduce_scatter(f32({3, 2}), f32({5, 2})); }),
              HasSubstr("in (5, 2) should have W·n = 2·3 = 6 rows for out (3, 2)"));
  EXPECT_THAT(error([&](Communicator& c) { c.reduce_scatter(f32({1, 2}), f32({2, 3})); }),
              HasSubstr("out (1, 2) and in (2, 3) differ beyond the first dimension"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_gather(f32({3}), f32({2})); }),
              HasSubstr("out (3) should have W·n = 2·2 = 4 rows for in (2)"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_gather(f32({2}), f32({})); }),
              HasSubstr("in is a scalar; it needs a first dimension"));
  EXPECT_THAT(error([&](Communicator& c) {
                const Tensor t = f32({4});
                c.all_gather(t, make_view(t, {4}));
              }),
              HasSubstr("out and in share storage"));
  EXPECT_THAT(error([&](Communicator& c) {
                c.all_gather(f32({2}), Tensor::zeros({1}, DType::f64));
              }),
              HasSubstr("out is f32, in is f64"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_to_all(f32({1}), {1}, f32({1}), {1, 0}); }),
              HasSubstr("recv_counts has 1 entries, expected one per rank (2)"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_to_all(f32({1}), {1, 0}, f32({1}), {2, -1}); }),
              HasSubstr("send_counts[1] = -1 is negative"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_to_all(f32({1}), {1, 0}, f32({3}), {1, 1}); }),
              HasSubstr("in (3) has 3 rows but send_counts add up to 2"));
  EXPECT_THAT(error([&](Communicator& c) { c.all_to_all(f32({1}), {1, 1}, f32({2}), {1, 1}); }),
              HasSubstr("out (1) has 1 rows but recv_counts add up to 2"));
  EXPECT_THAT(error([&](Communicator& c) { c.broadcast(f32({1}), 2); }),
              HasSubstr("root 2 is not a rank of this group of 2"));
  EXPECT_THAT(error([&](Communicator& c) { c.exchange_counts({1}); }),
              HasSubstr("passed 1 counts, expected one per rank (2)"));
}

TEST(CommunicatorChecks, ABadArgumentOnOneRankFailsTheOthersToo) {
  std::vector<std::string> errors(2);
  const std::exception_ptr e = run_guarded(2, [&](Communicator& c) {
    try {
      c.all_reduce(Tensor::zeros({2}, c.rank() == 1 ? DType::bf16 : DType::f32));
    } catch (const Error& x) {
      errors[size_t(c.rank())] = x.what();
      throw;
    }
  });
  EXPECT_THAT(message_of(e), HasSubstr("all_reduce: rank 1: cannot reduce a bf16 tensor"));
  EXPECT_THAT(errors[0], HasSubstr("rank 0: all_reduce failed: the group was aborted"));
}

// --- split ---------------------------------------------------------------------------------

// Six ranks as two groups by parity, ranked by a key that reverses them: each group's
// collectives pair only inside it, and both groups run at once.
TEST(ThreadGroup, SplitMakesIndependentGroupsRankedByKey) {
  std::vector<std::vector<double>> sums(6), gathered(6);
  std::vector<int> ranks(6), worlds(6);
  run_ok(6, [&](Communicator& comm) {
    const int r = comm.rank();
    const auto sub = comm.split(r % 2, -r);  // colour: parity; key: descending rank
    const size_t i = size_t(r);
    ranks[i] = sub->rank();
    worlds[i] = sub->world_size();
    const Tensor t = Tensor::from_vector<double>({1}, {double(r)});
    sub->all_reduce(t);
    sums[i] = t.to_vector<double>();
    const Tensor all = Tensor::zeros({3}, DType::f64);
    sub->all_gather(all, Tensor::from_vector<double>({1}, {double(r)}));
    gathered[i] = all.to_vector<double>();
    comm.barrier();  // the parent stays usable
  });
  for (int r = 0; r < 6; ++r) {
    SCOPED_TRACE(::testing::Message() << "rank " << r);
    EXPECT_EQ(worlds[size_t(r)], 3);
    EXPECT_EQ(ranks[size_t(r)], 2 - r / 2) << "the largest key is the last rank";
    EXPECT_EQ(sums[size_t(r)], (std::vector<double>{r % 2 ? 1.0 + 3 + 5 : 0.0 + 2 + 4}));
    EXPECT_EQ(gathered[size_t(r)], (r % 2 ? std::vector<double>{5, 3, 1}
                                          : std::vector<double>{4, 2, 0}));
  }
}

// Equal keys keep the parent's order; a group may be a single rank; a split of a split works.
TEST(ThreadGroup, SplitTiesKeepRankOrderAndSplitsNest) {
  std::vector<std::vector<int64_t>> counts(4);
  std::vector<int> alone(4), inner(4);
  run_ok(4, [&](Communicator& comm) {
    const int r = comm.rank();
    const auto half = comm.split(r / 2, 0);
    EXPECT_EQ(half->rank(), r % 2);
    const auto single = half->split(half->rank(), 0);
    alone[size_t(r)] = single->world_size();
    single->all_reduce(Tensor::zeros({2}, DType::f32));
    inner[size_t(r)] = single->rank();
    // Rows move inside the half only: each sends r + 1 rows to its partner.
    counts[size_t(r)] = half->exchange_counts({half->rank() == 0 ? 0 : r + 1,
                                               half->rank() == 1 ? 0 : r + 1});
  });
  EXPECT_EQ(alone, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(inner, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(counts[0], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(counts[1], (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(counts[2], (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(counts[3], (std::vector<int64_t>{3, 0}));
}

// A rank that throws anywhere frees the peers blocked in a subgroup (the abort reaches every
// group split from the job), and one that returns early fails the subgroup peers that wait for
// it, instead of leaving them to the timeout.
TEST(ThreadGroup, FailuresReachTheSplitGroups) {
  auto start = std::chrono::steady_clock::now();
  std::exception_ptr e = run_guarded(4, [](Communicator& comm) {
    const auto sub = comm.split(comm.rank() % 2, 0);
    if (comm.rank() == 1) throw Error("rank 1 failed");
    sub->barrier();  // rank 3 waits for rank 1 here
  }, 60s);
  EXPECT_EQ(message_of(e), "rank 1 failed");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);

  start = std::chrono::steady_clock::now();
  e = run_guarded(2, [](Communicator& comm) {
    const auto sub = comm.split(0, 0);
    if (comm.rank() == 0) return;
    sub->barrier();
  }, 60s);
  EXPECT_THAT(message_of(e), HasSubstr("rank 0 returned from its function while rank 1 waits "
                                       "for it in barrier"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);

  e = run_guarded(2, [](Communicator& comm) { comm.split(comm.rank() - 1, 0); });
  EXPECT_THAT(message_of(e), HasSubstr("split: rank 0: color -1 is negative"));
}

// --- Single --------------------------------------------------------------------------------

TEST(Single, IsTheIdentity) {
  dist::Single s;
  EXPECT_EQ(s.rank(), 0);
  EXPECT_EQ(s.world_size(), 1);
  const Tensor t = Tensor::from_vector<float>({3}, {1, 2, 3});
  s.all_reduce(t, ReduceOp::mean);
  s.broadcast(t, 0);
  s.barrier();
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  const Tensor out = Tensor::zeros({3}, DType::f32);
  s.reduce_scatter(out, t);
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  const Tensor gathered = Tensor::zeros({3}, DType::f32);
  s.all_gather(gathered, t);
  EXPECT_EQ(gathered.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  const Tensor moved = Tensor::zeros({3}, DType::f32);
  s.all_to_all(moved, {3}, t, {3});
  EXPECT_EQ(moved.to_vector<float>(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(s.exchange_counts({7}), (std::vector<int64_t>{7}));
  const auto alone = s.split(3, 1);
  EXPECT_EQ(alone->world_size(), 1);
  EXPECT_EQ(alone->rank(), 0);
}

TEST(Single, ChecksItsArguments) {
  dist::Single s;
  const Tensor t = Tensor::zeros({3}, DType::f32);
  EXPECT_THAT(error_of([&] { s.broadcast(t, 1); }), HasSubstr("root 1 is not a rank"));
  EXPECT_THAT(error_of([&] { s.all_to_all(Tensor::zeros({2}, DType::f32), {2}, t, {3}); }),
              HasSubstr("rank 0 sends 3 rows to itself but expects to receive 2"));
  EXPECT_THAT(error_of([&] { s.all_reduce(Tensor::zeros({1}, DType::i32), ReduceOp::mean); }),
              HasSubstr("mean of an i32 tensor"));
}

}  // namespace
}  // namespace remoe::test
