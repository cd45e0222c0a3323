// CUDA RMSNorm against the CPU reference: f32 activations (tight) and bf16 activations (to their
// rounding); w, dw and rstd are f32 in both. Skips without a visible GPU.
#include <cmath>
#include <ostream>

#include "kernels/rmsnorm.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

constexpr double kEps = 1e-5;

struct RmsShape {
  int64_t rows, dim;
};
void PrintTo(const RmsShape& s, std::ostream* os) { *os << s.rows << "x" << s.dim; }

using GpuRmsnorm = GpuTestWithParam<RmsShape>;

template <typename T>
void check_rmsnorm(const RmsShape& shape) {
  const auto [rows, dim] = shape;
  Rng rng{uint64_t(rows * 1000 + dim)};
  const GpuInput x = gpu_input<T>(randn({rows, dim}, DType::f32, rng));
  const GpuInput dy = gpu_input<T>(randn({rows, dim}, DType::f32, rng));
  const GpuInput w = gpu_input<float>(randn({dim}, DType::f32, rng, 0.5));

  Tensor y = cpu_empty({rows, dim}), rstd = cpu_empty({rows}), dx = cpu_empty({rows, dim}),
         dw = cpu_empty({dim});
  cpu::rmsnorm_forward(y.data<float>(), rstd.data<float>(), x.ref.data<float>(), w.ref.data<float>(),
                       rows, dim, kEps);
  cpu::rmsnorm_backward(dx.data<float>(), dw.data<float>(), dy.ref.data<float>(), x.ref.data<float>(),
                        w.ref.data<float>(), rstd.data<float>(), rows, dim);

  Tensor yd = gpu_empty<T>({rows, dim}), rstdd = gpu_empty<float>({rows}), dxd = gpu_empty<T>({rows, dim}),
         dwd = gpu_empty<float>({dim});
  cuda::rmsnorm_forward(dev<T>(yd), dev<float>(rstdd), dev<T>(x.gpu), dev<float>(w.gpu), rows, dim, kEps,
                        gpu_stream());
  cuda::rmsnorm_backward(dev<T>(dxd), dev<float>(dwd), dev<T>(dy.gpu), dev<T>(x.gpu), dev<float>(w.gpu),
                         dev<float>(rstdd), rows, dim, gpu_stream());

  EXPECT_TRUE(all_close(on_cpu(rstdd), rstd, 0, kGpuF32Rtol)) << "rstd";
  EXPECT_TRUE(all_close(on_cpu(yd), y, out_atol<T>(), out_rtol<T>()))
      << "y";
  EXPECT_TRUE(all_close(on_cpu(dxd), dx, out_atol<T>(), out_rtol<T>())) << "dx";
  // dw sums `rows` products in f32 in chunks (the CPU: in double): the error grows like √rows.
  EXPECT_TRUE(all_close(on_cpu(dwd), dw, kGpuF32Atol * std::sqrt(double(rows)), kGpuF32Rtol)) << "dw";

  // Deterministic: a second backward gives the same dw bits.
  Tensor dwd2 = gpu_empty<float>({dim});
  cuda::rmsnorm_backward<T>(nullptr, dev<float>(dwd2), dev<T>(dy.gpu), dev<T>(x.gpu), dev<float>(w.gpu),
                            dev<float>(rstdd), rows, dim, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(dwd2), on_cpu(dwd), 0, 0)) << "dw run to run";
}

TEST_P(GpuRmsnorm, F32MatchesCpu) { check_rmsnorm<float>(GetParam()); }
TEST_P(GpuRmsnorm, Bf16MatchesCpu) { check_rmsnorm<bf16>(GetParam()); }

// One row, one feature, dims around the block size, rows around the dw chunk (64), a wide row.
INSTANTIATE_TEST_SUITE_P(Shapes, GpuRmsnorm,
                         ::testing::Values(RmsShape{1, 1}, RmsShape{1, 7}, RmsShape{3, 255},
                                           RmsShape{64, 256}, RmsShape{65, 257}, RmsShape{130, 768},
                                           RmsShape{300, 4096}));

TEST_F(GpuTest, RmsnormNoRowsGivesZeroDw) {
  const int64_t dim = 5;
  const Tensor w = on_gpu(Tensor::full({dim}, 1.0, DType::f32));
  Tensor dwd = on_gpu(Tensor::full({dim}, 7.0, DType::f32));
  cuda::rmsnorm_backward<float>(nullptr, dev<float>(dwd), nullptr, nullptr, dev<float>(w), nullptr, 0, dim,
                                stream());
  EXPECT_TRUE(all_close(on_cpu(dwd), Tensor::zeros({dim}, DType::f32), 0, 0));
}

}  // namespace
}  // namespace remoe::test
