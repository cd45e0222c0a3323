// The differentiable all-to-all (dist/ops.h) on W threads against hand computations of the
// exchange and of its reverse in backward; expert parallelism's dispatch plan
// (dist/expert_parallel.h) on counts worked out by hand; the refusal of an uneven expert split.
#include <gmock/gmock.h>

#include "dist/expert_parallel.h"
#include "dist/ops.h"
#include "tests/dist/run_guarded.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

using dist::Communicator;
using ::testing::HasSubstr;

// Rank `from` sends (from + 2·to + 1) mod 3 rows to `to`: uneven, with zeros (and W = 1 sends 1).
int64_t rows(int from, int to) { return (from + 2 * to + 1) % 3; }

// Rows are (2, 3) blocks; element c of the k-th row that `from` sends to `to` holds a value
// that names all four, and the seed of backward on the receiver names them again, negated.
double sent_value(int from, int to, int64_t k, int64_t c) { return 1000 * from + 100 * to + 10 * k + c; }
double seed_value(int from, int to, int64_t k, int64_t c) { return -sent_value(from, to, k, c) - 0.5; }
constexpr int64_t kRowElems = 6;

class AllToAllRows : public ::testing::TestWithParam<int> {};

TEST_P(AllToAllRows, ForwardIsTheExchangeAndBackwardTheReverseExchange) {
  const int w = GetParam();
  run_ok(w, [&](Communicator& comm) {
    const int r = comm.rank();
    std::vector<int64_t> send, recv;
    std::vector<double> x_values, expected_out, seed_values;
    for (int p = 0; p < w; ++p) {
      send.push_back(rows(r, p));
      recv.push_back(rows(p, r));
      for (int64_t k = 0; k < send.back(); ++k)
        for (int64_t c = 0; c < kRowElems; ++c) x_values.push_back(sent_value(r, p, k, c));
      for (int64_t k = 0; k < recv.back(); ++k)
        for (int64_t c = 0; c < kRowElems; ++c) {
          expected_out.push_back(sent_value(p, r, k, c));
          seed_values.push_back(seed_value(p, r, k, c));
        }
    }
    const int64_t n_send = int64_t(x_values.size()) / kRowElems;
    const int64_t n_recv = int64_t(expected_out.size()) / kRowElems;
    Tensor x = Tensor::from_vector<double>({n_send, 2, 3}, x_values);
    x.set_requires_grad(true);
    const Tensor out = dist::all_to_all_rows(comm, x, send, recv);
    EXPECT_EQ(out.shape(), (Shape{n_recv, 2, 3})) << "rank " << r;
    EXPECT_EQ(values(out), expected_out) << "rank " << r;
    EXPECT_EQ(tape_size(), 1u);

    // Every rank seeds its own output; the gradient of each row of x is the seed its receiver
    // put on that row, wherever the row went.
    backward(out, Tensor::from_vector<double>({n_recv, 2, 3}, seed_values));
    std::vector<double> expected_dx;
    for (int p = 0; p < w; ++p)
      for (int64_t k = 0; k < rows(r, p); ++k)
        for (int64_t c = 0; c < kRowElems; ++c) expected_dx.push_back(seed_value(r, p, k, c));
    ASSERT_TRUE(x.grad().defined()) << "rank " << r;
    EXPECT_EQ(values(x.grad()), expected_dx) << "rank " << r;
  });
}

// Two exchanges in a row with a scale between them: backward runs both reverse exchanges, in
// the reverse order, and the chain rule holds across ranks (the round trip is the identity).
TEST_P(AllToAllRows, RoundTripChainsThroughTheTape) {
  const int w = GetParam();
  run_ok(w, [&](Communicator& comm) {
    const int r = comm.rank();
    std::vector<int64_t> send, recv;
    for (int p = 0; p < w; ++p) {
      send.push_back(rows(r, p));
      recv.push_back(rows(p, r));
    }
    int64_t n = 0;
    for (int64_t s : send) n += s;
    Rng rng(uint64_t(17 + r));
    const Tensor x = param({n, 4}, rng, "x");
    const Tensor there = dist::all_to_all_rows(comm, x, send, recv);
    const Tensor back = dist::all_to_all_rows(comm, ops::scale(there, 3.0), recv, send);
    EXPECT_EQ(values(back), values(ops::scale(x, 3.0))) << "rank " << r;
    const Tensor seed = randn({n, 4}, DType::f64, rng);
    backward(back, seed);
    EXPECT_EQ(values(x.grad()), values(ops::scale(seed, 3.0))) << "rank " << r;
  });
}

// A rank that sends and receives nothing still runs both collectives (its tensors are empty),
// so its peers are not left waiting; under NoGradGuard nothing is recorded.
TEST_P(AllToAllRows, EmptyRanksTakePartAndNoGradRecordsNothing) {
  const int w = GetParam();
  run_ok(w, [&](Communicator& comm) {
    const int r = comm.rank();
    // Only rank w−1 sends, one row to each rank except rank 0.
    std::vector<int64_t> send(size_t(w), 0), recv(size_t(w), 0);
    if (r == w - 1)
      for (int p = 1; p < w; ++p) send[size_t(p)] = 1;
    if (r > 0) recv[size_t(w - 1)] = 1;
    int64_t n_send = 0, n_recv = 0;
    for (int p = 0; p < w; ++p) n_send += send[size_t(p)], n_recv += recv[size_t(p)];
    Tensor x = Tensor::full({n_send, 3}, 1.0 + r, DType::f64);
    x.set_requires_grad(true);
    {
      NoGradGuard no_grad;
      (void)dist::all_to_all_rows(comm, x, send, recv);
      EXPECT_EQ(tape_size(), 0u);
    }
    const Tensor out = dist::all_to_all_rows(comm, x, send, recv);
    EXPECT_EQ(values(out), std::vector<double>(size_t(n_recv * 3), double(w)));
    backward(out, Tensor::full({n_recv, 3}, 2.0, DType::f64));
    EXPECT_EQ(values(x.grad()), std::vector<double>(size_t(n_send * 3), 2.0)) << "rank " << r;
  });
}

INSTANTIATE_TEST_SUITE_P(World, AllToAllRows, ::testing::Values(1, 2, 3, 4));

TEST(AllToAllRows, BadCountsNameTheRank) {
  const auto e = run_guarded(2, [&](Communicator& comm) {
    const Tensor x = Tensor::zeros({3, 2}, DType::f64);
    (void)dist::all_to_all_rows(comm, x, {1, 2}, {1});
  });
  ASSERT_TRUE(e);
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    EXPECT_THAT(err.what(), HasSubstr("all_to_all_rows"));
    EXPECT_THAT(err.what(), HasSubstr("1 receive counts for 2 ranks"));
  }
}

Tensor offsets_of(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off{0};
  for (int32_t c : counts) off.push_back(off.back() + c);
  return Tensor::from_vector<int32_t>({int64_t(off.size())}, off);
}

std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }

// W = 2, E = 4, L = 2. Rank 0 routes {1, 2, 0, 3} rows to experts 0..3, rank 1 {2, 0, 1, 1}.
// Rank 0 receives, in order: [0→e0: r0][0→e1: r1 r2][1→e0: r3 r4], so grouped by expert
// e0 = {r0, r3, r4}, e1 = {r1, r2}. Rank 1 receives [0→e3: r0 r1 r2][1→e2: r3][1→e3: r4]:
// e2 = {r3}, e3 = {r0, r1, r2, r4}.
TEST(ExpertDispatch, PlanMatchesHandComputation) {
  const std::vector<std::vector<int32_t>> counts{{1, 2, 0, 3}, {2, 0, 1, 1}};
  std::vector<dist::ExpertDispatch> plans(2);
  run_ok(2, [&](Communicator& comm) {
    const dist::ExpertParallel ep{&comm};
    plans[size_t(comm.rank())] = dist::plan_expert_dispatch(ep, offsets_of(counts[size_t(comm.rank())]));
  });
  const dist::ExpertDispatch& p0 = plans[0];
  EXPECT_EQ(p0.send_counts, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(p0.recv_counts, (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(p0.regroup);
  EXPECT_EQ(ints(p0.grouped.expert_offsets), (std::vector<int32_t>{0, 3, 5}));
  EXPECT_EQ(ints(p0.grouped.token_index), (std::vector<int32_t>{0, 3, 4, 1, 2}));
  EXPECT_EQ(ints(p0.grouped.row_of), (std::vector<int32_t>{0, -1, -1, 3, -1, 4, 1, -1, 2, -1}));
  EXPECT_EQ(p0.grouped.n_rows, 5);
  EXPECT_EQ(ints(p0.received.token_index), (std::vector<int32_t>{0, 3, 4, 1, 2}));
  EXPECT_EQ(ints(p0.received.row_of), (std::vector<int32_t>{0, 3, 4, 1, 2}));

  const dist::ExpertDispatch& p1 = plans[1];
  EXPECT_EQ(p1.send_counts, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(p1.recv_counts, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(ints(p1.grouped.expert_offsets), (std::vector<int32_t>{0, 1, 5}));
  EXPECT_EQ(ints(p1.grouped.token_index), (std::vector<int32_t>{3, 0, 1, 2, 4}));
  EXPECT_EQ(ints(p1.received.token_index), (std::vector<int32_t>{1, 2, 3, 0, 4}));
  EXPECT_EQ(ints(p1.received.row_of), (std::vector<int32_t>{3, 0, 1, 2, 4}));

  // The two gathers undo each other: receive order → grouped → receive order.
  const Tensor rows = Tensor::from_vector<double>({5, 1}, {10, 11, 12, 13, 14});
  const Tensor grouped = ops::gather_rows(rows, p1.grouped);
  EXPECT_EQ(values(grouped), (std::vector<double>{13, 10, 11, 12, 14}));
  EXPECT_EQ(values(ops::gather_rows(grouped, p1.received)), values(rows));
}

// One expert per rank: rows arrive grouped already, so the plan skips the regrouping; a rank
// that nobody routes to gets an empty plan but took part in the count exchange.
TEST(ExpertDispatch, OneExpertPerRankAndARankThatReceivesNothing) {
  const std::vector<std::vector<int32_t>> counts{{2, 1, 0, 0}, {0, 3, 0, 1}, {1, 0, 0, 0}, {0, 0, 0, 2}};
  std::vector<dist::ExpertDispatch> plans(4);
  run_ok(4, [&](Communicator& comm) {
    plans[size_t(comm.rank())] =
        dist::plan_expert_dispatch({&comm}, offsets_of(counts[size_t(comm.rank())]));
  });
  for (const auto& p : plans) EXPECT_FALSE(p.regroup);
  EXPECT_EQ(plans[1].recv_counts, (std::vector<int64_t>{1, 3, 0, 0}));
  EXPECT_EQ(ints(plans[1].grouped.token_index), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(plans[2].recv_counts, (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(plans[2].grouped.n_rows, 0);
  EXPECT_EQ(ints(plans[2].grouped.expert_offsets), (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(plans[3].recv_counts, (std::vector<int64_t>{0, 1, 0, 2}));
  EXPECT_EQ(plans[1].send_counts, (std::vector<int64_t>{0, 3, 0, 1}));
}

TEST(ExpertParallel, UnevenSplitIsRefusedNamingExpertsAndRanks) {
  const dist::ThreadGroup group(3);
  const auto comm = group.communicator(1);
  const dist::ExpertParallel ep{comm.get()};
  EXPECT_EQ(ep.rank(), 1);
  EXPECT_EQ(ep.world(), 3);
  EXPECT_EQ(ep.local_experts(6), 2);
  EXPECT_EQ(ep.first_expert(6), 2);
  const std::string msg = error_of([&] { (void)ep.local_experts(8); });
  EXPECT_THAT(msg, HasSubstr("8 experts (n_experts · granularity)"));
  EXPECT_THAT(msg, HasSubstr("3 expert-parallel ranks"));
  const dist::ExpertParallel none;
  EXPECT_FALSE(none.enabled());
  EXPECT_EQ(none.local_experts(8), 8);
}

}  // namespace
}  // namespace remoe::test
