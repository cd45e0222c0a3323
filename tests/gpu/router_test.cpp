// CUDA routers against the CPU reference (kernels/router.h). Skips without a visible GPU.
// Gates, masks and every integer statistic must match exactly; probabilities, renormalised
// gates and score sums to the f32 tolerance (the softmax and the sums run in another order).
#include <algorithm>
#include <numeric>
#include <string>
#include <tuple>

#include "kernels/router.h"
#include "tests/gpu/moe_gpu_util.h"

namespace remoe::test {
namespace {

// Host buffers for one router call's outputs.
struct HostRouting {
  std::vector<float> gates, probs, score_sums;
  std::vector<int32_t> mask, expert_counts, token_counts;
  int32_t nonzero = -1;
};

// Device buffers, pre-filled with garbage so an output the kernel forgets to write shows.
struct DeviceRouting {
  Tensor gates, probs, mask, expert_counts, score_sums, token_counts, nonzero;
  DeviceRouting(int64_t T, int64_t E) {
    gates = Tensor::full({T, E}, -7.0, DType::f32, Device::cuda);
    probs = Tensor::full({T, E}, -7.0, DType::f32, Device::cuda);
    mask = Tensor::full({T, E}, 7, DType::i32, Device::cuda);
    expert_counts = Tensor::full({E}, 7, DType::i32, Device::cuda);
    score_sums = Tensor::full({E}, -7.0, DType::f32, Device::cuda);
    token_counts = Tensor::full({T}, 7, DType::i32, Device::cuda);
    nonzero = Tensor::full({1}, 7, DType::i32, Device::cuda);
  }
  cuda::RouterStats<float> stats() const {
    return {dev<int32_t>(mask), dev<int32_t>(expert_counts), dev<float>(score_sums),
            dev<int32_t>(token_counts), dev<int32_t>(nonzero)};
  }
  HostRouting read() const {
    return {download<float>(gates),       download<float>(probs),
            download<float>(score_sums),  download<int32_t>(mask),
            download<int32_t>(expert_counts), download<int32_t>(token_counts),
            download<int32_t>(nonzero)[0]};
  }
};

HostRouting cpu_relu(const std::vector<float>& z, int64_t T, int64_t E) {
  HostRouting r;
  r.gates.resize(size_t(T * E));
  r.mask.resize(size_t(T * E));
  r.expert_counts.resize(size_t(E));
  r.score_sums.resize(size_t(E));
  r.token_counts.resize(size_t(T));
  cpu::relu_router_forward<float>(r.gates.data(),
                                  {r.mask.data(), r.expert_counts.data(), r.score_sums.data(),
                                   r.token_counts.data(), &r.nonzero},
                                  z.data(), T, E);
  return r;
}

HostRouting cpu_topk(const std::vector<float>& z, int64_t T, int64_t E, int k, bool renorm) {
  HostRouting r = cpu_relu(z, T, E);  // sizes every buffer
  r.probs.resize(size_t(T * E));
  cpu::topk_router_forward<float>(r.gates.data(), r.probs.data(),
                                  {r.mask.data(), r.expert_counts.data(), r.score_sums.data(),
                                   r.token_counts.data(), &r.nonzero},
                                  z.data(), T, E, k, renorm);
  return r;
}

// ReLU logits with the edges: exact zeros (inactive), a token with no active expert (token
// T/2), an expert no token chooses (expert E/2 when E > 1).
std::vector<float> relu_logits(int64_t T, int64_t E, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> z = normal_f32(T * E, rng);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      float& v = z[size_t(t * E + e)];
      if ((t + 3 * e) % 11 == 0) v = 0.0f;
      if (t == T / 2 || (E > 1 && e == E / 2)) v = -std::abs(v) - 0.1f;
    }
  return z;
}

using Shape2 = std::tuple<int64_t, int64_t>;  // (T, E)
using GpuReluRouter = GpuTestWithParam<Shape2>;

TEST_P(GpuReluRouter, ForwardMatchesCpu) {
  const auto [T, E] = GetParam();
  const std::vector<float> z = relu_logits(T, E, 11);
  const HostRouting want = cpu_relu(z, T, E);
  DeviceRouting got_d(T, E);
  const Tensor zd = upload<float>({T, E}, z);
  cuda::relu_router_forward<float>(dev<float>(got_d.gates), got_d.stats(), dev<float>(zd), T, E,
                                   stream());
  const HostRouting got = got_d.read();
  EXPECT_TRUE(close(got.gates, want.gates, 0, 0));  // a copy or a zero: exact
  EXPECT_EQ(got.mask, want.mask);
  EXPECT_EQ(got.token_counts, want.token_counts);
  EXPECT_EQ(got.expert_counts, want.expert_counts);
  EXPECT_EQ(got.nonzero, want.nonzero);
  EXPECT_TRUE(close(got.score_sums, want.score_sums, kGpuF32Atol, kGpuF32Rtol));
  if (T > 2 && E > 1) {
    EXPECT_EQ(want.token_counts[size_t(T / 2)], 0) << "the idle-token edge is not exercised";
    EXPECT_EQ(want.expert_counts[size_t(E / 2)], 0) << "the empty-expert edge is not exercised";
  }

  // Deterministic: a second run gives the same bits.
  DeviceRouting again_d(T, E);
  cuda::relu_router_forward<float>(dev<float>(again_d.gates), again_d.stats(), dev<float>(zd), T,
                                   E, stream());
  EXPECT_TRUE(close(again_d.read().score_sums, got.score_sums, 0, 0));
}

TEST_P(GpuReluRouter, BackwardMatchesCpu) {
  const auto [T, E] = GetParam();
  const std::vector<float> z = relu_logits(T, E, 12);
  Rng rng(13);
  const std::vector<float> dg = normal_f32(T * E, rng);
  std::vector<float> want(size_t(T * E));
  cpu::relu_router_backward<float>(want.data(), dg.data(), z.data(), T, E);
  Tensor dz = Tensor::full({T, E}, -7.0, DType::f32, Device::cuda);
  const Tensor zd = upload<float>({T, E}, z), dgd = upload<float>({T, E}, dg);
  cuda::relu_router_backward<float>(dev<float>(dz), dev<float>(dgd), dev<float>(zd), T, E,
                                    stream());
  EXPECT_TRUE(close(download<float>(dz), want, 0, 0));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuReluRouter,
                         ::testing::Values(Shape2{0, 8}, Shape2{1, 1}, Shape2{5, 1},
                                           Shape2{37, 8}, Shape2{64, 33}, Shape2{129, 3},
                                           Shape2{200, 128}, Shape2{1000, 8},
                                           Shape2{70, 300}),
                         [](const auto& info) {
                           return "T" + std::to_string(std::get<0>(info.param)) + "_E" +
                                  std::to_string(std::get<1>(info.param));
                         });

// --- softmax top-k ----------------------------------------------------------------------------

struct TopkCase {
  int64_t T, E;
  int k;
  bool renormalize;
};

// Logits far from ties (a permutation of E values 0.05 apart, so neighbouring probabilities
// differ by 5%), except exact ties on purpose: token 0 has all logits equal (the k lowest
// experts must win) and token 1 has its two largest equal.
std::vector<float> topk_logits(int64_t T, int64_t E, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> z(size_t(T * E));
  std::vector<int64_t> perm(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    std::iota(perm.begin(), perm.end(), int64_t(0));
    for (int64_t i = E - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
    const float shift = float(rng.normal());
    for (int64_t e = 0; e < E; ++e) z[size_t(t * E + e)] = shift + 0.05f * float(perm[size_t(e)]);
  }
  if (T > 0)
    for (int64_t e = 0; e < E; ++e) z[size_t(e)] = 0.5f;
  if (T > 1 && E > 1) {
    float* row = z.data() + E;
    const auto top = std::max_element(row, row + E) - row;
    row[(top + E / 2) % E] = row[top];
  }
  return z;
}

using GpuTopkRouter = GpuTestWithParam<TopkCase>;

TEST_P(GpuTopkRouter, ForwardMatchesCpu) {
  const auto [T, E, k, renorm] = GetParam();
  const std::vector<float> z = topk_logits(T, E, 21);
  const HostRouting want = cpu_topk(z, T, E, k, renorm);
  DeviceRouting got_d(T, E);
  const Tensor zd = upload<float>({T, E}, z);
  cuda::topk_router_forward<float>(dev<float>(got_d.gates), dev<float>(got_d.probs),
                                   got_d.stats(), dev<float>(zd), T, E, k, renorm, nullptr,
                                   stream());
  const HostRouting got = got_d.read();
  EXPECT_EQ(got.mask, want.mask);  // ties included: the lower expert index wins
  EXPECT_EQ(got.token_counts, want.token_counts);
  EXPECT_EQ(got.expert_counts, want.expert_counts);
  EXPECT_EQ(got.nonzero, want.nonzero);
  EXPECT_EQ(got.nonzero, int32_t(T * k));
  EXPECT_TRUE(close(got.probs, want.probs, kGpuF32Atol, kGpuF32Rtol));
  EXPECT_TRUE(close(got.gates, want.gates, kGpuF32Atol, kGpuF32Rtol));
  EXPECT_TRUE(close(got.score_sums, want.score_sums, kGpuF32Atol, kGpuF32Rtol));
  if (T > 0) {
    for (int64_t e = 0; e < E; ++e)
      EXPECT_EQ(got.mask[size_t(e)], e < k ? 1 : 0) << "all-tie token, expert " << e;
  }
}

TEST_P(GpuTopkRouter, BackwardMatchesCpu) {
  const auto [T, E, k, renorm] = GetParam();
  const std::vector<float> z = topk_logits(T, E, 22);
  const HostRouting fwd = cpu_topk(z, T, E, k, renorm);
  Rng rng(23);
  const std::vector<float> dg = normal_f32(T * E, rng), dp = normal_f32(T * E, rng);
  const Tensor probs = upload<float>({T, E}, fwd.probs), mask = upload<int32_t>({T, E}, fwd.mask);
  const Tensor dgd = upload<float>({T, E}, dg), dpd = upload<float>({T, E}, dp);
  // Both upstream gradients, then each alone (the other null).
  for (int which = 0; which < 3; ++which) {
    SCOPED_TRACE(which == 0 ? "dgates and dprobs" : which == 1 ? "dgates only" : "dprobs only");
    const float* dg_h = which == 2 ? nullptr : dg.data();
    const float* dp_h = which == 1 ? nullptr : dp.data();
    std::vector<float> want(size_t(T * E));
    cpu::topk_router_backward<float>(want.data(), dg_h, dp_h, fwd.probs.data(), fwd.mask.data(),
                                     T, E, renorm);
    Tensor dz = Tensor::full({T, E}, -7.0, DType::f32, Device::cuda);
    cuda::topk_router_backward<float>(dev<float>(dz), dg_h ? dev<float>(dgd) : nullptr,
                                      dp_h ? dev<float>(dpd) : nullptr, dev<float>(probs),
                                      dev<int32_t>(mask), T, E, renorm, stream());
    EXPECT_TRUE(close(download<float>(dz), want, kGpuF32Atol, kGpuF32Rtol));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuTopkRouter,
    ::testing::Values(TopkCase{0, 8, 2, false}, TopkCase{1, 1, 1, false},
                      TopkCase{9, 1, 1, true}, TopkCase{37, 8, 1, false},
                      TopkCase{37, 8, 2, true}, TopkCase{130, 8, 8, false},
                      TopkCase{65, 33, 3, true}, TopkCase{200, 128, 8, false},
                      TopkCase{200, 128, 8, true}, TopkCase{50, 256, 5, false},
                      TopkCase{1000, 64, 4, false}),
    [](const auto& info) {
      const TopkCase& c = info.param;
      return "T" + std::to_string(c.T) + "_E" + std::to_string(c.E) + "_k" + std::to_string(c.k) +
             (c.renormalize ? "_renorm" : "");
    });

// --- top-k with a selection bias ---------------------------------------------------------------

// A bias far larger than any probability: +2 on experts e ≡ 2 (mod 3), −1 on e ≡ 1, 0 on the
// rest, so the selection is first the +2 group, then the 0 group, then the −1 group, each by p
// (and by index on ties). It moves the selection away from the unbiased top-k on most tokens
// (checked below: on at least one). The scores at each selection boundary are the largest p of
// their group, 5% apart as in topk_logits (or exactly tied, tokens 0 and 1), so the CPU and the
// GPU, whose p differ by a rounding, must pick the same experts.
std::vector<float> selection_bias(int64_t E) {
  std::vector<float> b(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) b[size_t(e)] = e % 3 == 2 ? 2.0f : e % 3 == 1 ? -1.0f : 0.0f;
  return b;
}

HostRouting cpu_topk_biased(const std::vector<float>& z, const std::vector<float>& bias,
                            int64_t T, int64_t E, int k, bool renorm) {
  HostRouting r = cpu_topk(z, T, E, k, renorm);  // sizes every buffer
  cpu::topk_router_forward<float>(r.gates.data(), r.probs.data(),
                                  {r.mask.data(), r.expert_counts.data(), r.score_sums.data(),
                                   r.token_counts.data(), &r.nonzero},
                                  z.data(), bias.data(), T, E, k, renorm);
  return r;
}

using GpuTopkRouterBias = GpuTestWithParam<TopkCase>;

TEST_P(GpuTopkRouterBias, SelectsByTheBiasedScoreAndGatesByTheUnbiasedP) {
  const auto [T, E, k, renorm] = GetParam();
  const std::vector<float> z = topk_logits(T, E, 31);
  const std::vector<float> bias = selection_bias(E);
  const HostRouting want = cpu_topk_biased(z, bias, T, E, k, renorm);
  const HostRouting unbiased = cpu_topk(z, T, E, k, renorm);
  DeviceRouting got_d(T, E);
  const Tensor zd = upload<float>({T, E}, z), bd = upload<float>({E}, bias);
  cuda::topk_router_forward<float>(dev<float>(got_d.gates), dev<float>(got_d.probs),
                                   got_d.stats(), dev<float>(zd), T, E, k, renorm,
                                   dev<float>(bd), stream());
  const HostRouting got = got_d.read();
  EXPECT_EQ(got.mask, want.mask);
  EXPECT_EQ(got.token_counts, want.token_counts);
  EXPECT_EQ(got.expert_counts, want.expert_counts);
  EXPECT_EQ(got.nonzero, int32_t(T * k));
  EXPECT_TRUE(close(got.probs, want.probs, kGpuF32Atol, kGpuF32Rtol));
  EXPECT_TRUE(close(got.gates, want.gates, kGpuF32Atol, kGpuF32Rtol));
  EXPECT_TRUE(close(got.score_sums, want.score_sums, kGpuF32Atol, kGpuF32Rtol));
  // The statistics are the unbiased p's: the same as without the bias.
  EXPECT_TRUE(close(got.score_sums, unbiased.score_sums, kGpuF32Atol, kGpuF32Rtol));

  // Gates are the unbiased p on the selected (or p / Σ_selected p), computed from the GPU's own
  // probabilities: exact without renormalisation.
  for (int64_t t = 0; t < T; ++t) {
    double selected = 0;
    for (int64_t e = 0; e < E; ++e)
      if (got.mask[size_t(t * E + e)]) selected += got.probs[size_t(t * E + e)];
    for (int64_t e = 0; e < E; ++e) {
      const size_t i = size_t(t * E + e);
      const double p = got.probs[i];
      if (!got.mask[i])
        EXPECT_EQ(got.gates[i], 0.0f) << "t " << t << " e " << e;
      else if (!renorm)
        EXPECT_EQ(got.gates[i], got.probs[i]) << "t " << t << " e " << e;
      else
        EXPECT_NEAR(got.gates[i], p / selected, 2e-6 * (p / selected)) << "t " << t << " e " << e;
    }
  }
  // The bias moved the selection (else this test checks nothing new).
  if (T > 0 && E >= 3 && k < E) {
    int64_t moved = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e)
        if (want.mask[size_t(t * E + e)] != unbiased.mask[size_t(t * E + e)]) {
          ++moved;
          break;
        }
    EXPECT_GT(moved, 0) << "the bias changed no token's selection";
    // The all-tie token 0: the +2 group's lowest indices win (2, 5, 8, …), not 0, 1, ….
    if (k <= E / 3) {
      for (int i = 0; i < k; ++i)
        EXPECT_EQ(got.mask[size_t(2 + 3 * i)], 1) << "expert " << 2 + 3 * i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuTopkRouterBias,
    ::testing::Values(TopkCase{0, 8, 2, false}, TopkCase{1, 1, 1, false},
                      TopkCase{9, 3, 1, false}, TopkCase{37, 8, 2, false},
                      TopkCase{37, 8, 2, true}, TopkCase{65, 33, 3, true},
                      TopkCase{200, 128, 8, false}, TopkCase{200, 128, 8, true},
                      TopkCase{50, 256, 5, false}, TopkCase{130, 8, 7, true}),
    [](const auto& info) {
      const TopkCase& c = info.param;
      return "T" + std::to_string(c.T) + "_E" + std::to_string(c.E) + "_k" + std::to_string(c.k) +
             (c.renormalize ? "_renorm" : "");
    });

using GpuTopkRouterErrors = GpuTest;

TEST_F(GpuTopkRouterErrors, RejectsTooManyExpertsAndBadK) {
  DeviceRouting d(2, 300);
  const Tensor z = Tensor::zeros({2, 300}, DType::f32, Device::cuda);
  EXPECT_NE(error_of([&] {
              cuda::topk_router_forward<float>(dev<float>(d.gates), dev<float>(d.probs), d.stats(),
                                               dev<float>(z), 2, 300, 2, false, nullptr,
                                               stream());
            }).find("E = 300"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              cuda::topk_router_forward<float>(dev<float>(d.gates), dev<float>(d.probs), d.stats(),
                                               dev<float>(z), 2, 8, 9, false, nullptr,
                                               stream());
            }).find("k = 9"),
            std::string::npos);
}

}  // namespace
}  // namespace remoe::test
