// CUDA GEMMs against the CPU reference, every transpose combination: the f32 CUDA-core kernel
// (tight), bf16 on tensor cores with f32 output (tight but for the summation order) and with
// bf16 output (to its rounding); forward and backward. Skips without a visible GPU.
#include <algorithm>
#include <cmath>
#include <ostream>
#include <tuple>

#include "kernels/matmul.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

struct MmShape {
  int64_t M, N, K;
};
void PrintTo(const MmShape& s, std::ostream* os) { *os << s.M << "x" << s.N << "x" << s.K; }

using MmParam = std::tuple<MmShape, bool, bool>;  // shape, trans_a, trans_b
using GpuMatmul = GpuTestWithParam<MmParam>;

// Sums of K products in another order: a sequential f32 sum with FMAs drifts ~K·2^-24 of the
// values (of order √K for unit inputs); tensor cores add in their own order and grouping.
double f32_atol(int64_t K) { return 2e-7 * double(K) + kGpuF32Atol; }
double tensor_core_atol(int64_t K) { return 1e-6 * double(K) + kGpuF32Atol; }

// Out: the kernel's output type; In: its operands' type.
template <typename Out, typename In>
void check_matmul(const MmParam& param, double atol_forward, double atol_backward, double rtol) {
  const auto [shape, trans_a, trans_b] = param;
  const auto [M, N, K] = shape;
  Rng rng{uint64_t(M * 10007 + N * 101 + K) + (trans_a ? 1 : 0) + (trans_b ? 2 : 0)};
  const Shape a_shape = trans_a ? Shape{K, M} : Shape{M, K};
  const Shape b_shape = trans_b ? Shape{N, K} : Shape{K, N};
  const GpuInput a = gpu_input<In>(randn(a_shape, DType::f32, rng));
  const GpuInput b = gpu_input<In>(randn(b_shape, DType::f32, rng));
  const GpuInput dc = gpu_input<In>(randn({M, N}, DType::f32, rng));

  Tensor c = cpu_empty({M, N}), da = cpu_empty(a_shape), db = cpu_empty(b_shape);
  cpu::matmul_forward(c.data<float>(), a.ref.data<float>(), b.ref.data<float>(), M, N, K, trans_a, trans_b);
  cpu::matmul_backward(da.data<float>(), db.data<float>(), dc.ref.data<float>(), a.ref.data<float>(),
                       b.ref.data<float>(), M, N, K, trans_a, trans_b);

  Tensor cd = gpu_empty<Out>({M, N}), dad = gpu_empty<Out>(a_shape), dbd = gpu_empty<Out>(b_shape);
  cuda::matmul_forward(dev<Out>(cd), dev<In>(a.gpu), dev<In>(b.gpu), M, N, K, trans_a, trans_b, gpu_stream());
  cuda::matmul_backward(dev<Out>(dad), dev<Out>(dbd), dev<In>(dc.gpu), dev<In>(a.gpu), dev<In>(b.gpu), M, N, K,
                        trans_a, trans_b, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(cd), c, atol_forward, rtol)) << "C";
  EXPECT_TRUE(all_close(on_cpu(dad), da, atol_backward, rtol)) << "dA";
  EXPECT_TRUE(all_close(on_cpu(dbd), db, atol_backward, rtol)) << "dB";
}

TEST_P(GpuMatmul, F32MatchesCpu) {
  const auto [shape, trans_a, trans_b] = GetParam();
  const int64_t k_max = std::max({shape.M, shape.N, shape.K});  // the backward sums over M or N
  check_matmul<float, float>(GetParam(), f32_atol(shape.K), f32_atol(k_max), kGpuF32Rtol);
}

TEST_P(GpuMatmul, Bf16TensorCoresF32OutMatchesCpu) {
  const auto [shape, trans_a, trans_b] = GetParam();
  const int64_t k_max = std::max({shape.M, shape.N, shape.K});
  check_matmul<float, bf16>(GetParam(), tensor_core_atol(shape.K), tensor_core_atol(k_max), kGpuF32Rtol);
}

TEST_P(GpuMatmul, Bf16TensorCoresBf16OutMatchesCpu) {
  const auto [shape, trans_a, trans_b] = GetParam();
  const int64_t k_max = std::max({shape.M, shape.N, shape.K});
  // Outputs of order √K, rounded to 8 bits.
  check_matmul<bf16, bf16>(GetParam(), 1e-3 * std::sqrt(double(shape.K)), 1e-3 * std::sqrt(double(k_max)),
                           kGpuBf16Rtol);
}

// One element, exact tiles, tails in every dimension (odd, below and above one tile), a K spanning
// many k-tiles, one row (a decode step).
INSTANTIATE_TEST_SUITE_P(Shapes, GpuMatmul,
                         ::testing::Combine(::testing::Values(MmShape{1, 1, 1}, MmShape{64, 64, 64},
                                                              MmShape{17, 33, 9}, MmShape{65, 127, 300},
                                                              MmShape{1, 96, 200}, MmShape{130, 70, 1000},
                                                              // x·wᵀ on the Hopper kernels: tails in M, N and K
                                                              MmShape{300, 136, 264},
                                                              // few output tiles over a long k: f32 split-K
                                                              MmShape{8, 20, 9000}),
                                            ::testing::Bool(), ::testing::Bool()));

TEST_F(GpuTest, MatmulEmptyKGivesZeros) {
  const int64_t M = 5, N = 70;
  Tensor cd = on_gpu(Tensor::full({M, N}, 3.0, DType::f32));
  cuda::matmul_forward(dev<float>(cd), static_cast<const float*>(nullptr), nullptr, M, N, 0, false, true,
                       stream());
  EXPECT_TRUE(all_close(on_cpu(cd), Tensor::zeros({M, N}, DType::f32), 0, 0));
  Tensor cb = on_gpu(ops::cast(Tensor::full({M, N}, 3.0, DType::f32), DType::bf16));
  cuda::matmul_forward(dev<bf16>(cb), static_cast<const bf16*>(nullptr), nullptr, M, N, 0, true, false,
                       stream());
  EXPECT_TRUE(all_close(on_cpu(cb), Tensor::zeros({M, N}, DType::bf16), 0, 0));
}

}  // namespace
}  // namespace remoe::test
