// CUDA capacity dropping against the CPU reference (kernels/capacity.h). Skips without a
// visible GPU. The choice is integer work on the same inputs, so every output must match the
// CPU's exactly (atol = rtol = 0): kept, gates_out (copies or zeros), the three counts, and the
// backward. Inputs carry the edges: a token routed nowhere, an expert nobody routes to, a hot
// expert every token routes to (so it is over capacity), heavy ties (quantised scores, +0 and −0,
// which the CPU's `>` treats as equal), negative scores, capacities 0, 1, ≥ T.
#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/capacity.h"
#include "tests/gpu/moe_gpu_util.h"

namespace remoe::test {
namespace {

enum class Scores {
  kTies,      // 0.25, 0.5, 0.75, 1 and ±0: many equal scores at every boundary
  kZeros,     // mostly +0 and −0, some 0.5: the boundary falls among signed zeros
  kDistinct,  // uniform in [−1, 1): every radix digit matters, keys on both sides of the sign
};

const char* scores_name(Scores s) {
  return s == Scores::kTies ? "Ties" : s == Scores::kZeros ? "Zeros" : "Distinct";
}

template <typename T>
struct Inputs {
  std::vector<T> gates, scores;
  std::vector<int32_t> mask;
};

// Expert 0 is hot (every routed token but the idle one), expert E/2 empty (E > 1), token T/2
// idle (T > 2); the rest routed with probability 0.3.
template <typename T>
Inputs<T> make_inputs(int64_t TT, int64_t E, Scores kind, uint64_t seed) {
  Rng rng(seed);
  Inputs<T> in;
  const size_t n = size_t(TT * E);
  in.gates.resize(n);
  in.scores.resize(n);
  in.mask.resize(n);
  for (int64_t t = 0; t < TT; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const size_t i = size_t(t * E + e);
      bool on = e == 0 || rng.uniform() < 0.3;
      if (TT > 2 && t == TT / 2) on = false;
      if (E > 1 && e == E / 2) on = false;
      in.mask[i] = on ? 1 : 0;
      in.gates[i] = T(rng.normal());
      const T signed_zero = rng.uniform() < 0.5 ? T(0) : -T(0);
      switch (kind) {
        case Scores::kTies: {
          const int64_t level = rng.below(5);
          in.scores[i] = level == 0 ? signed_zero : T(0.25 * double(level));
          break;
        }
        case Scores::kZeros:
          in.scores[i] = rng.uniform() < 0.8 ? signed_zero : T(0.5);
          break;
        case Scores::kDistinct:
          in.scores[i] = T(2.0 * rng.uniform() - 1.0);
          break;
      }
    }
  return in;
}

struct HostOut {
  std::vector<double> gates_out;
  std::vector<int32_t> kept, expert_counts, token_counts;
  int32_t nonzero = -1;
};

template <typename T>
HostOut cpu_drop(const Inputs<T>& in, int64_t TT, int64_t E, int64_t capacity, bool by_position) {
  std::vector<T> g(size_t(TT * E));
  HostOut out;
  out.kept.resize(size_t(TT * E));
  out.expert_counts.resize(size_t(E));
  out.token_counts.resize(size_t(TT));
  cpu::capacity_drop_forward<T>(g.data(), out.kept.data(), out.expert_counts.data(),
                                out.token_counts.data(), &out.nonzero, in.gates.data(),
                                in.mask.data(), in.scores.data(), TT, E, capacity, by_position);
  out.gates_out = as_double(g);
  return out;
}

// Pre-filled with garbage, so an output the kernel forgets to write shows.
template <typename T>
HostOut gpu_drop(const Inputs<T>& in, int64_t TT, int64_t E, int64_t capacity, bool by_position,
                 cudaStream_t stream) {
  const Tensor gates = upload<T>({TT, E}, in.gates), scores = upload<T>({TT, E}, in.scores);
  const Tensor mask = upload<int32_t>({TT, E}, in.mask);
  Tensor g = Tensor::full({TT, E}, -7.0, dtype_of<T>(), Device::cuda);
  Tensor kept = Tensor::full({TT, E}, 7, DType::i32, Device::cuda);
  Tensor ec = Tensor::full({E}, 7, DType::i32, Device::cuda);
  Tensor tc = Tensor::full({TT}, 7, DType::i32, Device::cuda);
  Tensor nz = Tensor::full({1}, 7, DType::i32, Device::cuda);
  cuda::capacity_drop_forward<T>(dev<T>(g), dev<int32_t>(kept), dev<int32_t>(ec), dev<int32_t>(tc),
                                 dev<int32_t>(nz), dev<T>(gates), dev<int32_t>(mask),
                                 dev<T>(scores), TT, E, capacity, by_position, stream);
  return {as_double(download<T>(g)), download<int32_t>(kept), download<int32_t>(ec),
          download<int32_t>(tc), download<int32_t>(nz)[0]};
}

struct CapCase {
  int64_t T, E;
  int64_t capacity;  // −1: T (everything fits), −2: T + 5
  bool by_position;
  Scores scores;
};

std::string case_name(const ::testing::TestParamInfo<CapCase>& info) {
  const CapCase& c = info.param;
  const std::string cap = c.capacity == -1   ? "T"
                          : c.capacity == -2 ? "Tplus5"
                                             : std::to_string(c.capacity);
  return std::string(scores_name(c.scores)) + "_T" + std::to_string(c.T) + "_E" +
         std::to_string(c.E) + "_C" + cap + (c.by_position ? "_position" : "_probs");
}

int64_t capacity_of(const CapCase& c) {
  return c.capacity == -1 ? c.T : c.capacity == -2 ? c.T + 5 : c.capacity;
}

template <typename T>
void check_forward_and_backward(const CapCase& c, cudaStream_t stream) {
  const int64_t TT = c.T, E = c.E, cap = capacity_of(c);
  const Inputs<T> in = make_inputs<T>(TT, E, c.scores, 41 + uint64_t(TT) + 7 * uint64_t(E));
  const HostOut want = cpu_drop(in, TT, E, cap, c.by_position);
  const HostOut got = gpu_drop(in, TT, E, cap, c.by_position, stream);
  EXPECT_EQ(got.kept, want.kept);
  EXPECT_TRUE(close(got.gates_out, want.gates_out, 0, 0));
  EXPECT_EQ(got.expert_counts, want.expert_counts);
  EXPECT_EQ(got.token_counts, want.token_counts);
  EXPECT_EQ(got.nonzero, want.nonzero);

  // The case exercises what it says: the hot expert is cut to the capacity when it is over.
  int64_t hot = 0;
  for (int64_t t = 0; t < TT; ++t) hot += in.mask[size_t(t * E)];
  if (TT > 0) {
    EXPECT_EQ(want.expert_counts[0], std::min(hot, cap));
  }
  if (TT > 2 && E > 1) {
    EXPECT_EQ(want.token_counts[size_t(TT / 2)], 0) << "the idle-token edge is not exercised";
    EXPECT_EQ(want.expert_counts[size_t(E / 2)], 0) << "the empty-expert edge is not exercised";
  }

  // Backward: dgates = dgates_out ⊙ kept.
  Rng rng(43);
  std::vector<T> dout(size_t(TT * E));
  for (T& v : dout) v = T(rng.normal());
  std::vector<T> dwant(size_t(TT * E));
  cpu::capacity_drop_backward<T>(dwant.data(), dout.data(), want.kept.data(), TT * E);
  const Tensor doutd = upload<T>({TT, E}, dout), keptd = upload<int32_t>({TT, E}, want.kept);
  Tensor dg = Tensor::full({TT, E}, -7.0, dtype_of<T>(), Device::cuda);
  cuda::capacity_drop_backward<T>(dev<T>(dg), dev<T>(doutd), dev<int32_t>(keptd), TT * E, stream);
  EXPECT_TRUE(close(download<T>(dg), dwant, 0, 0));
}

using GpuCapacity = GpuTestWithParam<CapCase>;

TEST_P(GpuCapacity, F32MatchesCpuExactly) {
  check_forward_and_backward<float>(GetParam(), stream());
}

TEST_P(GpuCapacity, F64MatchesCpuExactly) {
  check_forward_and_backward<double>(GetParam(), stream());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuCapacity,
    ::testing::Values(
        // T = 0 and one token.
        CapCase{0, 8, 2, false, Scores::kTies}, CapCase{1, 1, 0, false, Scores::kTies},
        CapCase{1, 1, 1, false, Scores::kDistinct}, CapCase{1, 8, 0, true, Scores::kTies},
        // E = 1, capacity 0 / 1 / ≥ T, both policies.
        CapCase{7, 1, 0, false, Scores::kTies}, CapCase{7, 1, 1, false, Scores::kTies},
        CapCase{7, 1, 1, true, Scores::kTies}, CapCase{7, 1, -1, false, Scores::kDistinct},
        CapCase{7, 1, -2, true, Scores::kDistinct},
        // T not a multiple of the block (512), several chunks of the ordered pass.
        CapCase{513, 8, 1, false, Scores::kTies}, CapCase{513, 8, 100, false, Scores::kTies},
        CapCase{513, 8, 100, true, Scores::kTies}, CapCase{513, 8, 200, false, Scores::kZeros},
        CapCase{513, 8, 171, false, Scores::kDistinct}, CapCase{513, 8, -1, false, Scores::kTies},
        CapCase{2000, 64, 300, false, Scores::kTies}, CapCase{2000, 64, 300, true, Scores::kTies},
        CapCase{2000, 64, 650, false, Scores::kZeros},
        CapCase{2000, 64, 150, false, Scores::kDistinct},
        CapCase{1500, 128, 0, false, Scores::kDistinct},
        CapCase{1500, 128, 95, false, Scores::kTies},
        CapCase{1500, 128, 95, true, Scores::kDistinct},
        CapCase{1500, 128, 333, false, Scores::kDistinct},
        CapCase{1500, 128, -2, false, Scores::kZeros},
        // Long columns: 70 000 tokens, the hot expert cut to a few thousand.
        CapCase{70000, 8, 5003, false, Scores::kDistinct},
        CapCase{70000, 8, 5003, false, Scores::kTies},
        CapCase{70000, 8, 20000, true, Scores::kZeros}),
    case_name);

using GpuCapacityErrors = GpuTest;

TEST_F(GpuCapacityErrors, RejectsANegativeCapacity) {
  const Tensor z = Tensor::zeros({2, 3}, DType::f32, Device::cuda);
  Tensor kept = Tensor::zeros({2, 3}, DType::i32, Device::cuda);
  Tensor ec = Tensor::zeros({3}, DType::i32, Device::cuda),
         tc = Tensor::zeros({2}, DType::i32, Device::cuda);
  Tensor nz = Tensor::zeros({1}, DType::i32, Device::cuda);
  const std::string msg = error_of([&] {
    cuda::capacity_drop_forward<float>(
        dev<float>(z), dev<int32_t>(kept), dev<int32_t>(ec), dev<int32_t>(tc), dev<int32_t>(nz),
        dev<float>(z), dev<int32_t>(kept), dev<float>(z), 2, 3, -1, false, stream());
  });
  EXPECT_NE(msg.find("capacity must be >= 0, got -1"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
