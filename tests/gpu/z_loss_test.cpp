// CUDA router z-loss against the CPU reference (kernels/z_loss.h). Skips without a visible GPU.
// Both compute each token's log-sum-exp in double and sum the squares in double, in different
// orders (the GPU: per-block partials, then one block), so an f32 loss agrees to one f32
// rounding (rtol 1e-6) and an f64 one to 1e-12; the backward is the same double expression per
// element, so it agrees to the output type's rounding as well. A repeated forward gives the
// same bits.
#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>

#include "kernels/z_loss.h"
#include "tests/gpu/moe_gpu_util.h"

namespace remoe::test {
namespace {

constexpr double kCoeff = 1e-3;

template <typename T>
struct Tol {
  static constexpr double rtol = std::is_same_v<T, float> ? 1e-6 : 1e-12;
};

// Logits of scale `scale` around a per-token offset, so some rows have large log-sum-exps
// (the max shift matters) and some negative ones (lse < 0 flips the gradient's sign).
template <typename T>
std::vector<T> logits_of(int64_t TT, int64_t E, uint64_t seed) {
  Rng rng(seed);
  std::vector<T> z(size_t(TT * E));
  for (int64_t t = 0; t < TT; ++t) {
    const double offset = t % 3 == 0 ? 30.0 : t % 3 == 1 ? -8.0 : 0.0;
    for (int64_t e = 0; e < E; ++e) z[size_t(t * E + e)] = T(offset + 3.0 * rng.normal());
  }
  return z;
}

template <typename T>
void check_z_loss(int64_t TT, int64_t E, cudaStream_t stream) {
  const std::vector<T> z = logits_of<T>(TT, E, 71 + uint64_t(TT));
  const Tensor zd = upload<T>({TT, E}, z);

  T want = T(-1);
  cpu::z_loss_forward<T>(&want, z.data(), TT, E, kCoeff);
  Tensor loss = Tensor::full({1}, -7.0, dtype_of<T>(), Device::cuda);
  Tensor again = Tensor::full({1}, -7.0, dtype_of<T>(), Device::cuda);
  for (Tensor* out : {&loss, &again})
    cuda::z_loss_forward<T>(dev<T>(*out), dev<T>(zd), TT, E, kCoeff, stream);
  const T got = download<T>(loss)[0];
  EXPECT_TRUE(close(std::vector<T>{got}, std::vector<T>{want}, 0, Tol<T>::rtol));
  EXPECT_EQ(download<T>(again)[0], got) << "the loss is not deterministic";
  if (TT == 0) {
    EXPECT_EQ(got, T(0));
  } else {
    EXPECT_GT(got, T(0)) << "a zero loss checks nothing";
  }

  // Backward from a dloss in device memory.
  const T dloss_value = T(0.7);
  const Tensor dloss = upload<T>({1}, std::vector<T>{dloss_value});
  std::vector<T> dwant(size_t(TT * E));
  cpu::z_loss_backward<T>(dwant.data(), &dloss_value, z.data(), TT, E, kCoeff);
  Tensor dz = Tensor::full({TT, E}, -7.0, dtype_of<T>(), Device::cuda);
  cuda::z_loss_backward<T>(dev<T>(dz), dev<T>(dloss), dev<T>(zd), TT, E, kCoeff, stream);
  const std::vector<T> dgot = download<T>(dz);
  // atol: the smallest gradients (exp(z − lse) ≈ 1e-30) underflow differently; far below any
  // value that matters next to the row's largest (≈ coeff / T · 2 · lse).
  EXPECT_TRUE(close(dgot, dwant, 1e-30, Tol<T>::rtol));
  if (TT > 0) {
    double largest = 0;
    for (T v : dwant) largest = std::max(largest, std::abs(double(v)));
    EXPECT_GT(largest, 0.0) << "a zero gradient checks nothing";
  }
}

using Shape2 = std::tuple<int64_t, int64_t>;
using GpuZLoss = GpuTestWithParam<Shape2>;

TEST_P(GpuZLoss, F32MatchesCpu) {
  const auto [T, E] = GetParam();
  check_z_loss<float>(T, E, stream());
}

TEST_P(GpuZLoss, F64MatchesCpu) {
  const auto [T, E] = GetParam();
  check_z_loss<double>(T, E, stream());
}

// T = 0 and 1, E = 1, rows shorter and longer than a warp, T not a multiple of the 8 tokens a
// block takes, and more tokens than the 1024 partials' blocks hold at once (grid-stride).
INSTANTIATE_TEST_SUITE_P(Shapes, GpuZLoss,
                         ::testing::Values(Shape2{0, 8}, Shape2{1, 1}, Shape2{1, 8}, Shape2{37, 1},
                                           Shape2{37, 8}, Shape2{513, 33}, Shape2{1000, 64},
                                           Shape2{777, 128}, Shape2{50, 300}, Shape2{100003, 8}),
                         [](const auto& info) {
                           return "T" + std::to_string(std::get<0>(info.param)) + "_E" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace remoe::test
