// CUDA sum of squares, scaling and clipping against the CPU reference. Skips without a GPU.
#include <cmath>

#include "kernels/grad_norm.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

using GpuGradNorm = GpuTestWithParam<int64_t>;

template <typename T>
void check_grad_norm(int64_t n) {
  Rng rng(uint64_t(n) + 1);
  const GpuInput x = gpu_input<T>(randn({n}, DType::f32, rng, 0.3));
  const GpuInput y = gpu_input<T>(randn({n + 3}, DType::f32, rng));

  // Both sum n positive terms in double, only in another order: |error| ≤ n · 2^-53 · sum each.
  const double rtol = 2.0 * double(n + 3) * 1.2e-16;
  const double sum_x = cpu::sum_squares(x.ref.data<float>(), n);
  const double sum_y = cpu::sum_squares(y.ref.data<float>(), n + 3);
  Tensor out = on_gpu(Tensor::full({1}, 123.0, DType::f64));
  cuda::sum_squares(dev<double>(out), dev<T>(x.gpu), n, false, gpu_stream());
  const double got_x = on_cpu(out).item();
  EXPECT_NEAR(got_x, sum_x, rtol * sum_x);
  cuda::sum_squares(dev<double>(out), dev<T>(y.gpu), n + 3, true, gpu_stream());
  EXPECT_NEAR(on_cpu(out).item(), sum_x + sum_y, rtol * (sum_x + sum_y)) << "accumulated";
  // Deterministic: the same bits again.
  cuda::sum_squares(dev<double>(out), dev<T>(x.gpu), n, false, gpu_stream());
  EXPECT_EQ(on_cpu(out).item(), got_x);

  // scale_inplace: s · x in double, rounded once, as on the CPU.
  Tensor scaled = x.ref.clone();
  cpu::scale_inplace(scaled.data<float>(), 0.37, n);
  Tensor xd = x.gpu.clone();
  cuda::scale_inplace(dev<T>(xd), 0.37, n, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(xd), scaled, 0, std::is_same_v<T, float> ? 0.0 : kGpuBf16Rtol)) << "scale";

  // clip_inplace reads the sum of squares on the device: a max_norm below the norm scales by
  // max_norm / (norm + 1e-6), one above it leaves x alone.
  cuda::sum_squares(dev<double>(out), dev<T>(x.gpu), n, false, gpu_stream());
  const double norm = std::sqrt(sum_x);
  const double max_norm = 0.5 * norm;
  Tensor clipped = x.ref.clone();
  cpu::scale_inplace(clipped.data<float>(), max_norm / (norm + 1e-6), n);
  Tensor cd = x.gpu.clone();
  cuda::clip_inplace(dev<T>(cd), dev<double>(out), max_norm, n, gpu_stream());
  // The coefficient comes from the GPU's sum (equal up to the order of the sum): one f32 ulp at most.
  EXPECT_TRUE(all_close(on_cpu(cd), clipped, 0, std::is_same_v<T, float> ? 2e-7 : kGpuBf16Rtol)) << "clip";
  Tensor untouched = x.gpu.clone();
  cuda::clip_inplace(dev<T>(untouched), dev<double>(out), 2.0 * norm, n, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(untouched), on_cpu(x.gpu), 0, 0)) << "no clip";
}

TEST_P(GpuGradNorm, F32MatchesCpu) { check_grad_norm<float>(GetParam()); }
TEST_P(GpuGradNorm, Bf16MatchesCpu) { check_grad_norm<bf16>(GetParam()); }

// One value, one block's worth, a partial last block, the partial-sum cap (1024 blocks) passed.
INSTANTIATE_TEST_SUITE_P(Sizes, GpuGradNorm, ::testing::Values(1, 255, 256, 262145, 3'000'001));

TEST_F(GpuTest, SumSquaresOfNothing) {
  Tensor out = on_gpu(Tensor::full({1}, 5.0, DType::f64));
  cuda::sum_squares<float>(dev<double>(out), nullptr, 0, true, stream());
  EXPECT_EQ(on_cpu(out).item(), 5.0);  // accumulate: unchanged
  cuda::sum_squares<float>(dev<double>(out), nullptr, 0, false, stream());
  EXPECT_EQ(on_cpu(out).item(), 0.0);
}

}  // namespace
}  // namespace remoe::test
