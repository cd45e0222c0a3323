// CUDA RoPE against the CPU reference, f32 and bf16, forward and backward, out of place and in
// place. Skips without a visible GPU.
#include <ostream>

#include "kernels/rope.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

constexpr double kBase = 10000.0;

struct RopeShape {
  int64_t batch, seq, heads, head_dim;
};
void PrintTo(const RopeShape& s, std::ostream* os) {
  *os << "B" << s.batch << "_S" << s.seq << "_H" << s.heads << "_Dh" << s.head_dim;
}

using GpuRope = GpuTestWithParam<RopeShape>;

template <typename T>
void check_rope(const RopeShape& shape) {
  const auto [batch, seq, heads, head_dim] = shape;
  const Shape dims{batch, seq, heads, head_dim};
  Rng rng{uint64_t(seq * 31 + head_dim)};
  const GpuInput x = gpu_input<T>(randn(dims, DType::f32, rng));
  const GpuInput dy = gpu_input<T>(randn(dims, DType::f32, rng));

  Tensor y = cpu_empty(dims), dx = cpu_empty(dims);
  cpu::rope_forward(y.data<float>(), x.ref.data<float>(), batch, seq, heads, head_dim, kBase);
  cpu::rope_backward(dx.data<float>(), dy.ref.data<float>(), batch, seq, heads, head_dim, kBase);

  Tensor yd = gpu_empty<T>(dims), dxd = gpu_empty<T>(dims);
  cuda::rope_forward(dev<T>(yd), dev<T>(x.gpu), batch, seq, heads, head_dim, kBase, gpu_stream());
  cuda::rope_backward(dev<T>(dxd), dev<T>(dy.gpu), batch, seq, heads, head_dim, kBase, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(yd), y, out_atol<T>(), out_rtol<T>())) << "y";
  EXPECT_TRUE(all_close(on_cpu(dxd), dx, out_atol<T>(), out_rtol<T>())) << "dx";

  // In place (y aliases x) gives the same bits.
  Tensor inplace = x.gpu.clone();
  cuda::rope_forward(dev<T>(inplace), dev<T>(inplace), batch, seq, heads, head_dim, kBase, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(inplace), on_cpu(yd), 0, 0)) << "in place";
}

TEST_P(GpuRope, F32MatchesCpu) { check_rope<float>(GetParam()); }
TEST_P(GpuRope, Bf16MatchesCpu) { check_rope<bf16>(GetParam()); }

// seq 1 (angle 0), Dh 2, odd head counts, Dh 64 and 128, a long sequence (large angles).
INSTANTIATE_TEST_SUITE_P(Shapes, GpuRope,
                         ::testing::Values(RopeShape{1, 1, 1, 2}, RopeShape{2, 3, 3, 6},
                                           RopeShape{2, 17, 4, 64}, RopeShape{1, 33, 2, 128},
                                           RopeShape{1, 4096, 1, 64}));

}  // namespace
}  // namespace remoe::test
