// CUDA MoE regularisers against the CPU reference (kernels/moe_loss.h). Skips without a
// visible GPU. Both sum in double, in different orders: f32 losses agree to one f32 rounding
// (rtol 1e-6), f64 to 1e-10 (10⁵-term sums of positive values in two orders). The backward is
// the same double expression, so f32 matches to a rounding; a repeated forward gives the same
// bits.
#include <string>
#include <tuple>

#include "kernels/moe_loss.h"
#include "tests/gpu/moe_gpu_util.h"

namespace remoe::test {
namespace {

constexpr double kCoeff = 3e-3;
constexpr int kTopK = 2;

template <typename T>
struct Tol {
  static constexpr double rtol = std::is_same_v<T, float> ? 1e-6 : 1e-10;
};

template <typename T>
std::vector<T> scores_of(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<T> s(static_cast<size_t>(n));
  for (auto& v : s) v = rng.uniform() < 0.4 ? T(0) : T(rng.uniform() * 2.0);  // ReLU-like
  if (n > 0) s[0] = T(1);  // a loss of exactly 0 would check nothing
  return s;
}

std::vector<int32_t> counts_of(int64_t T, int64_t E, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> c(static_cast<size_t>(E));
  for (auto& v : c) v = int32_t(1 + rng.below(T > 0 ? T : 1));  // c_e ≥ 1
  return c;
}

using Shape2 = std::tuple<int64_t, int64_t>;
using GpuMoeLoss = GpuTestWithParam<Shape2>;

template <typename T>
void check_losses(int64_t TT, int64_t E, cudaStream_t stream) {
  const std::vector<T> s = scores_of<T>(TT * E, 61);
  const std::vector<int32_t> c = counts_of(TT, E, 62);
  const Tensor sd = upload<T>({TT, E}, s), cd = upload<int32_t>({E}, c);

  for (bool balanced : {true, false}) {
    SCOPED_TRACE(balanced ? "load_balance_loss" : "l1_loss");
    T want = T(-1);
    if (balanced)
      cpu::load_balance_loss_forward<T>(&want, s.data(), c.data(), TT, E, kCoeff, kTopK);
    else
      cpu::l1_loss_forward<T>(&want, s.data(), TT, E, kCoeff);
    Tensor loss = Tensor::full({1}, -7.0, dtype_of<T>(), Device::cuda);
    Tensor again = Tensor::full({1}, -7.0, dtype_of<T>(), Device::cuda);
    for (Tensor* out : {&loss, &again}) {
      if (balanced)
        cuda::load_balance_loss_forward<T>(dev<T>(*out), dev<T>(sd), dev<int32_t>(cd), TT, E,
                                           kCoeff, kTopK, stream);
      else
        cuda::l1_loss_forward<T>(dev<T>(*out), dev<T>(sd), TT, E, kCoeff, stream);
    }
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
    if (balanced)
      cpu::load_balance_loss_backward<T>(dwant.data(), &dloss_value, c.data(), TT, E, kCoeff, kTopK);
    else
      cpu::l1_loss_backward<T>(dwant.data(), &dloss_value, TT, E, kCoeff);
    Tensor ds = Tensor::full({TT, E}, -7.0, dtype_of<T>(), Device::cuda);
    if (balanced)
      cuda::load_balance_loss_backward<T>(dev<T>(ds), dev<T>(dloss), dev<int32_t>(cd), TT, E,
                                          kCoeff, kTopK, stream);
    else
      cuda::l1_loss_backward<T>(dev<T>(ds), dev<T>(dloss), TT, E, kCoeff, stream);
    EXPECT_TRUE(close(download<T>(ds), dwant, 0, Tol<T>::rtol));
  }
}

TEST_P(GpuMoeLoss, F32MatchesCpu) {
  const auto [T, E] = GetParam();
  check_losses<float>(T, E, stream());
}

TEST_P(GpuMoeLoss, F64MatchesCpu) {
  const auto [T, E] = GetParam();
  check_losses<double>(T, E, stream());
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuMoeLoss,
                         ::testing::Values(Shape2{0, 8}, Shape2{1, 1}, Shape2{37, 8},
                                           Shape2{1000, 3}, Shape2{4096, 128},
                                           Shape2{100000, 8}),
                         [](const auto& info) {
                           return "T" + std::to_string(std::get<0>(info.param)) + "_E" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace remoe::test
