// CUDA expert-choice routing against the CPU reference (kernels/expert_choice.h). Skips without
// a visible GPU.
//
// The softmax runs in another order on the GPU, so its probabilities agree with the CPU's to
// the f32 tolerance (atol 1e-5, rtol 1e-4; f64 1e-12), and score_sums too. The choice is then
// held two ways:
//   - exactly against the CPU's rule applied to the GPU's own probabilities (capacity dropping
//     by probability with every pair routed is the same rule: the `capacity` largest per expert,
//     ties to the lower token index), on any logits;
//   - exactly against the CPU's expert_choice_router_forward on "pattern" logits, where every
//     token is one of six rows, so each expert sees six well-separated probabilities, each
//     shared by many tokens: every boundary is a tie the lower token index must win.
// gates = probs on the chosen pairs bit for bit, expert_counts = min(capacity, T).
// Backward: top-k's rule, against the CPU backward on the same probs and mask, f32 tolerance.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "kernels/capacity.h"
#include "kernels/expert_choice.h"
#include "tests/gpu/moe_gpu_util.h"

namespace remoe::test {
namespace {

enum class Logits {
  kPatterns,  // token t is row r(t) of six: logit 0.7·(r + 1) on expert r mod E, 0 elsewhere
  kRandom,    // N(0, 2²)
};

template <typename T>
std::vector<T> make_logits(int64_t TT, int64_t E, Logits kind, uint64_t seed) {
  Rng rng(seed);
  std::vector<T> z(size_t(TT * E));
  for (int64_t t = 0; t < TT; ++t) {
    const int64_t r = rng.below(6);
    for (int64_t e = 0; e < E; ++e)
      z[size_t(t * E + e)] = kind == Logits::kRandom ? T(2.0 * rng.normal())
                                                     : T(e == r % E ? 0.7 * double(r + 1) : 0.0);
  }
  return z;
}

template <typename T>
struct Routed {
  std::vector<T> gates, probs, score_sums;
  std::vector<int32_t> mask, expert_counts, token_counts;
  int32_t nonzero = -1;
};

template <typename T>
Routed<T> cpu_route(const std::vector<T>& z, int64_t TT, int64_t E, int64_t capacity) {
  Routed<T> r;
  r.gates.resize(size_t(TT * E));
  r.probs.resize(size_t(TT * E));
  r.mask.resize(size_t(TT * E));
  r.expert_counts.resize(size_t(E));
  r.score_sums.resize(size_t(E));
  r.token_counts.resize(size_t(TT));
  cpu::expert_choice_router_forward<T>(r.gates.data(), r.probs.data(),
                                       {r.mask.data(), r.expert_counts.data(), r.score_sums.data(),
                                        r.token_counts.data(), &r.nonzero},
                                       z.data(), TT, E, capacity);
  return r;
}

// Device outputs pre-filled with garbage, so an output the kernel forgets to write shows.
template <typename T>
Routed<T> gpu_route(const Tensor& zd, int64_t TT, int64_t E, int64_t capacity,
                    cudaStream_t stream) {
  const DType dt = dtype_of<T>();
  Tensor gates = Tensor::full({TT, E}, -7.0, dt, Device::cuda);
  Tensor probs = Tensor::full({TT, E}, -7.0, dt, Device::cuda);
  Tensor mask = Tensor::full({TT, E}, 7, DType::i32, Device::cuda);
  Tensor ec = Tensor::full({E}, 7, DType::i32, Device::cuda);
  Tensor ss = Tensor::full({E}, -7.0, dt, Device::cuda);
  Tensor tc = Tensor::full({TT}, 7, DType::i32, Device::cuda);
  Tensor nz = Tensor::full({1}, 7, DType::i32, Device::cuda);
  cuda::expert_choice_router_forward<T>(
      dev<T>(gates), dev<T>(probs),
      {dev<int32_t>(mask), dev<int32_t>(ec), dev<T>(ss), dev<int32_t>(tc), dev<int32_t>(nz)},
      dev<T>(zd), TT, E, capacity, stream);
  return {download<T>(gates),      download<T>(probs),    download<T>(ss),
          download<int32_t>(mask), download<int32_t>(ec), download<int32_t>(tc),
          download<int32_t>(nz)[0]};
}

// The CPU's choice on the given probabilities: capacity dropping by probability, all routed.
template <typename T>
std::vector<int32_t> choice_on(const std::vector<T>& probs, int64_t TT, int64_t E,
                               int64_t capacity) {
  const std::vector<int32_t> all(size_t(TT * E), 1);
  std::vector<T> g(size_t(TT * E));
  std::vector<int32_t> kept(size_t(TT * E)), ec(static_cast<size_t>(E)),
      tc(static_cast<size_t>(TT));
  int32_t nz = 0;
  cpu::capacity_drop_forward<T>(g.data(), kept.data(), ec.data(), tc.data(), &nz, probs.data(),
                                all.data(), probs.data(), TT, E, capacity, false);
  return kept;
}

struct EcCase {
  int64_t T, E;
  int64_t capacity;
  Logits logits;
};

std::string case_name(const ::testing::TestParamInfo<EcCase>& info) {
  const EcCase& c = info.param;
  return std::string(c.logits == Logits::kPatterns ? "Patterns" : "Random") + "_T" +
         std::to_string(c.T) + "_E" + std::to_string(c.E) + "_C" + std::to_string(c.capacity);
}

template <typename T>
void check_forward(const EcCase& c, cudaStream_t stream) {
  const int64_t TT = c.T, E = c.E, cap = c.capacity;
  const double tol = std::is_same_v<T, float> ? kGpuF32Rtol : 1e-12;
  const double atol = std::is_same_v<T, float> ? kGpuF32Atol : 1e-12;
  const std::vector<T> z = make_logits<T>(TT, E, c.logits, 51 + uint64_t(TT) * 3 + uint64_t(E));
  const Routed<T> want = cpu_route(z, TT, E, cap);
  const Tensor zd = upload<T>({TT, E}, z);
  const Routed<T> got = gpu_route<T>(zd, TT, E, cap, stream);

  EXPECT_TRUE(close(got.probs, want.probs, atol, tol));
  EXPECT_TRUE(close(got.score_sums, want.score_sums, atol, tol));
  // The choice, exactly, on the GPU's probabilities.
  EXPECT_EQ(got.mask, choice_on(got.probs, TT, E, cap));
  if (c.logits == Logits::kPatterns) {
    EXPECT_EQ(got.mask, want.mask);
  }
  EXPECT_EQ(got.expert_counts, std::vector<int32_t>(size_t(E), int32_t(std::min(cap, TT))));
  std::vector<int32_t> per_token(size_t(TT), 0);
  int32_t total = 0;
  for (int64_t t = 0; t < TT; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const size_t i = size_t(t * E + e);
      per_token[size_t(t)] += got.mask[i];
      total += got.mask[i];
      EXPECT_EQ(got.gates[i], got.mask[i] ? got.probs[i] : T(0)) << "t " << t << " e " << e;
    }
  EXPECT_EQ(got.token_counts, per_token);
  EXPECT_EQ(got.nonzero, total);
  EXPECT_EQ(got.nonzero, int32_t(E * std::min(cap, TT)));

  // Deterministic: a second run gives the same bits.
  const Routed<T> again = gpu_route<T>(zd, TT, E, cap, stream);
  EXPECT_TRUE(close(again.score_sums, got.score_sums, 0, 0));
  EXPECT_EQ(again.mask, got.mask);
}

using GpuExpertChoice = GpuTestWithParam<EcCase>;

TEST_P(GpuExpertChoice, F32ForwardMatchesCpu) { check_forward<float>(GetParam(), stream()); }

TEST_P(GpuExpertChoice, F64ForwardMatchesCpu) { check_forward<double>(GetParam(), stream()); }

TEST_P(GpuExpertChoice, BackwardMatchesCpu) {
  const EcCase c = GetParam();
  const int64_t TT = c.T, E = c.E;
  const std::vector<float> z = make_logits<float>(TT, E, c.logits, 52);
  const Routed<float> fwd = cpu_route(z, TT, E, c.capacity);
  Rng rng(53);
  const std::vector<float> dg = normal_f32(TT * E, rng), dp = normal_f32(TT * E, rng);
  const Tensor probs = upload<float>({TT, E}, fwd.probs), mask = upload<int32_t>({TT, E}, fwd.mask);
  const Tensor dgd = upload<float>({TT, E}, dg), dpd = upload<float>({TT, E}, dp);
  for (int which = 0; which < 3; ++which) {
    SCOPED_TRACE(which == 0 ? "dgates and dprobs" : which == 1 ? "dgates only" : "dprobs only");
    const float* dg_h = which == 2 ? nullptr : dg.data();
    const float* dp_h = which == 1 ? nullptr : dp.data();
    std::vector<float> want(size_t(TT * E));
    cpu::expert_choice_router_backward<float>(want.data(), dg_h, dp_h, fwd.probs.data(),
                                              fwd.mask.data(), TT, E);
    Tensor dz = Tensor::full({TT, E}, -7.0, DType::f32, Device::cuda);
    cuda::expert_choice_router_backward<float>(dev<float>(dz), dg_h ? dev<float>(dgd) : nullptr,
                                               dp_h ? dev<float>(dpd) : nullptr, dev<float>(probs),
                                               dev<int32_t>(mask), TT, E, stream());
    EXPECT_TRUE(close(download<float>(dz), want, kGpuF32Atol, kGpuF32Rtol));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuExpertChoice,
    ::testing::Values(
        EcCase{0, 8, 2, Logits::kRandom}, EcCase{1, 1, 1, Logits::kRandom},
        EcCase{1, 4, 0, Logits::kRandom}, EcCase{1, 4, 3, Logits::kPatterns},
        EcCase{7, 1, 3, Logits::kPatterns}, EcCase{7, 1, 9, Logits::kRandom},
        EcCase{37, 8, 0, Logits::kPatterns}, EcCase{37, 8, 1, Logits::kPatterns},
        EcCase{37, 8, 10, Logits::kRandom}, EcCase{37, 8, 37, Logits::kRandom},
        EcCase{513, 8, 64, Logits::kPatterns}, EcCase{513, 8, 129, Logits::kRandom},
        EcCase{1000, 64, 16, Logits::kPatterns}, EcCase{1000, 64, 31, Logits::kRandom},
        EcCase{777, 128, 12, Logits::kPatterns}, EcCase{777, 128, 100, Logits::kRandom},
        EcCase{20000, 8, 2500, Logits::kPatterns}, EcCase{20000, 8, 4999, Logits::kRandom}),
    case_name);

TEST(GpuExpertChoicePatterns, EveryBoundaryIsATie) {
  // The pattern logits do what the comment says, on the CPU: each expert's capacity-th and
  // (capacity+1)-th largest probabilities are equal, so the lower-index rule decides.
  const int64_t TT = 513, E = 8, cap = 64;
  const std::vector<float> z = make_logits<float>(TT, E, Logits::kPatterns, 7);
  const Routed<float> r = cpu_route(z, TT, E, cap);
  for (int64_t e = 0; e < E; ++e) {
    std::vector<float> col;
    for (int64_t t = 0; t < TT; ++t) col.push_back(r.probs[size_t(t * E + e)]);
    std::sort(col.begin(), col.end(), std::greater<>());
    EXPECT_EQ(col[size_t(cap - 1)], col[size_t(cap)]) << "expert " << e;
  }
}

}  // namespace
}  // namespace remoe::test
