// CUDA elementwise kernels against the CPU reference. Skips without a visible GPU.
#include "kernels/elementwise.h"
#include "tests/gpu/gpu_test.h"

namespace remoe::test {
namespace {

using GpuElementwise = GpuTestWithParam<int64_t>;

TEST_P(GpuElementwise, AddInPlaceMatchesCpu) {
  const int64_t n = GetParam();
  Rng rng(1);
  const Tensor y = randn({n}, DType::f32, rng), x = randn({n}, DType::f32, rng);
  const Tensor yd = y.to(Device::cuda), xd = x.to(Device::cuda);
  cuda::add_inplace(static_cast<float*>(yd.raw()), static_cast<const float*>(xd.raw()), n, stream());
  const Tensor expected = ops::add(y, x);
  EXPECT_TRUE(all_close(yd.to(Device::cpu), expected, 0, 0));  // one f32 add: exact
}

TEST_P(GpuElementwise, AddMatchesCpu) {
  const int64_t n = GetParam();
  Rng rng(3);
  const Tensor a = randn({n}, DType::f32, rng), b = randn({n}, DType::f32, rng);
  const Tensor ad = a.to(Device::cuda), bd = b.to(Device::cuda);
  Tensor yd = Tensor::empty({n}, DType::f32, Device::cuda);
  cuda::add_forward(static_cast<float*>(yd.raw()), static_cast<const float*>(ad.raw()),
                    static_cast<const float*>(bd.raw()), n, stream());
  EXPECT_TRUE(all_close(yd.to(Device::cpu), ops::add(a, b), 0, 0));  // one f32 add: exact
}

TEST_P(GpuElementwise, CastsMatchCpuBitForBit) {
  const int64_t n = GetParam();
  Rng rng(2);
  const Tensor x = randn({n}, DType::f32, rng, 10.0);
  const Tensor xd = x.to(Device::cuda);
  Tensor bd = Tensor::empty({n}, DType::bf16, Device::cuda);
  cuda::cast(static_cast<bf16*>(bd.raw()), static_cast<const float*>(xd.raw()), n, stream());
  const Tensor b_cpu = ops::cast(x, DType::bf16);
  const auto gpu_bits = bd.to_vector<bf16>(), cpu_bits = b_cpu.to_vector<bf16>();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(gpu_bits[size_t(i)].bits, cpu_bits[size_t(i)].bits) << "element " << i;
  Tensor fd = Tensor::empty({n}, DType::f32, Device::cuda);
  cuda::cast(static_cast<float*>(fd.raw()), static_cast<const bf16*>(bd.raw()), n, stream());
  EXPECT_TRUE(all_close(fd.to(Device::cpu), ops::cast(b_cpu, DType::f32), 0, 0));
}

INSTANTIATE_TEST_SUITE_P(Sizes, GpuElementwise, ::testing::Values(1, 255, 256, 1000, 1 << 20));

}  // namespace
}  // namespace remoe::test
