// CUDA SwiGLU against the CPU reference (which computes in double), f32 and bf16.
// Skips without a visible GPU.
#include "kernels/swiglu.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

using GpuSwiglu = GpuTestWithParam<int64_t>;

template <typename T>
void check_swiglu(int64_t n) {
  Rng rng(uint64_t(n) + 5);
  // a spans ±20, where the sigmoid saturates on both sides.
  const GpuInput a = gpu_input<T>(randn({n}, DType::f32, rng, 5.0));
  const GpuInput b = gpu_input<T>(randn({n}, DType::f32, rng));
  const GpuInput dh = gpu_input<T>(randn({n}, DType::f32, rng));

  Tensor h = cpu_empty({n}), da = cpu_empty({n}), db = cpu_empty({n});
  cpu::swiglu_forward(h.data<float>(), a.ref.data<float>(), b.ref.data<float>(), n);
  cpu::swiglu_backward(da.data<float>(), db.data<float>(), dh.ref.data<float>(), a.ref.data<float>(),
                       b.ref.data<float>(), n);

  Tensor hd = gpu_empty<T>({n}), dad = gpu_empty<T>({n}), dbd = gpu_empty<T>({n});
  cuda::swiglu_forward(dev<T>(hd), dev<T>(a.gpu), dev<T>(b.gpu), n, gpu_stream());
  cuda::swiglu_backward(dev<T>(dad), dev<T>(dbd), dev<T>(dh.gpu), dev<T>(a.gpu), dev<T>(b.gpu), n, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(hd), h, out_atol<T>(), out_rtol<T>())) << "h";
  EXPECT_TRUE(all_close(on_cpu(dad), da, out_atol<T>(), out_rtol<T>())) << "da";
  EXPECT_TRUE(all_close(on_cpu(dbd), db, out_atol<T>(), out_rtol<T>())) << "db";

  // Either gradient alone (the other pointer null) gives the same values.
  Tensor db_only = gpu_empty<T>({n});
  cuda::swiglu_backward<T>(nullptr, dev<T>(db_only), dev<T>(dh.gpu), dev<T>(a.gpu), dev<T>(b.gpu), n,
                           gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(db_only), on_cpu(dbd), 0, 0)) << "db alone";
}

TEST_P(GpuSwiglu, F32MatchesCpu) { check_swiglu<float>(GetParam()); }
TEST_P(GpuSwiglu, Bf16MatchesCpu) { check_swiglu<bf16>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Sizes, GpuSwiglu, ::testing::Values(1, 7, 256, 1000, 100003));

}  // namespace
}  // namespace remoe::test
