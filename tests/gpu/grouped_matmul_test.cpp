// CUDA grouped GEMM against the CPU reference (kernels/grouped_matmul.h), each implementation:
// tiled (v1, any GPU), hopper (v2, sm_90a; its cases skip elsewhere) and automatic (the
// dispatch the model uses). Skips without a visible GPU.
// f32: fp32 FMA sums of up to L products against the CPU's double sums, so atol 1e-4 (not
//   1e-5) for the unit-variance inputs here, whose sums reach |y| ≈ √L ≈ 15.
// bf16: the reference runs in f32 on the bf16-rounded inputs; the GPU's products are exact and
//   its one rounding is the bf16 store: rtol kGpuBf16Rtol, atol scaled to the outputs' rms.
#include <numeric>
#include <string>

#include "kernels/grouped_matmul.h"
#include "tests/gpu/moe_gpu_util.h"

namespace remoe::test {
namespace {

constexpr double kF32Atol = 1e-4;

struct GemmCase {
  std::string name;
  std::vector<int32_t> counts;  // rows per group; E = counts.size()
  int64_t k_in, n_out;
  int64_t spare_rows = 0;  // max_rows − N: capacity the kernels must leave alone
};

using Impl = cuda::GroupedMatmulImpl;

std::vector<int32_t> offsets_of(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off(counts.size() + 1, 0);
  std::partial_sum(counts.begin(), counts.end(), off.begin() + 1);
  return off;
}

template <typename T>
std::vector<T> stored(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, bf16>) return to_bf16(v);
  else return v;
}

// Runs forward and backward through `impl`. Capacity rows past N hold NaN: no output may
// depend on them (the weight gradient reduces over rows, so a stage that reads past its
// group's end must not let them in).
template <typename T>
void check_case(const GemmCase& c, Impl impl, cudaStream_t stream) {
  const int64_t E = int64_t(c.counts.size()), K = c.k_in, NO = c.n_out;
  const std::vector<int32_t> off = offsets_of(c.counts);
  const int64_t N = off.back(), max_rows = N + c.spare_rows;
  Rng rng(41);
  std::vector<float> x = normal_f32(max_rows * K, rng), w = normal_f32(E * NO * K, rng),
                     dy = normal_f32(max_rows * NO, rng);
  if constexpr (std::is_same_v<T, bf16>) {
    x = to_f32(to_bf16(x));
    w = to_f32(to_bf16(w));
    dy = to_f32(to_bf16(dy));
  }
  for (int64_t i = N * K; i < max_rows * K; ++i) x[size_t(i)] = std::nanf("");
  for (int64_t i = N * NO; i < max_rows * NO; ++i) dy[size_t(i)] = std::nanf("");
  std::vector<float> y_want(size_t(N * NO)), dx_want(size_t(N * K)), dw_want(size_t(E * NO * K));
  cpu::grouped_matmul_forward<float>(y_want.data(), x.data(), w.data(), off.data(), E, K, NO);
  cpu::grouped_matmul_backward<float>(dx_want.data(), dw_want.data(), dy.data(), x.data(),
                                      w.data(), off.data(), E, K, NO);

  const Tensor xd = upload<T>({max_rows, K}, stored<T>(x)), wd = upload<T>({E, NO, K}, stored<T>(w));
  const Tensor dyd = upload<T>({max_rows, NO}, stored<T>(dy));
  const Tensor offd = upload<int32_t>({E + 1}, off);
  constexpr double kSentinel = -7.0;
  Tensor y = Tensor::full({max_rows, NO}, kSentinel, dtype_of<T>(), Device::cuda);
  Tensor dx = Tensor::full({max_rows, K}, kSentinel, dtype_of<T>(), Device::cuda);
  Tensor dw = Tensor::full({E, NO, K}, kSentinel, dtype_of<T>(), Device::cuda);
  cuda::grouped_matmul_forward<T>(dev<T>(y), dev<T>(xd), dev<T>(wd), dev<int32_t>(offd), E, K, NO,
                                  max_rows, stream, impl);
  cuda::grouped_matmul_backward<T>(dev<T>(dx), dev<T>(dw), dev<T>(dyd), dev<T>(xd), dev<T>(wd),
                                   dev<int32_t>(offd), E, K, NO, max_rows, stream, impl);

  const std::vector<double> y_all = as_double(download<T>(y)), dx_all = as_double(download<T>(dx));
  // Rows past N are capacity, not output: untouched.
  for (size_t i = size_t(N * NO); i < y_all.size(); ++i) ASSERT_EQ(y_all[i], kSentinel) << "y " << i;
  for (size_t i = size_t(N * K); i < dx_all.size(); ++i) ASSERT_EQ(dx_all[i], kSentinel) << "dx " << i;
  const std::vector<double> y_got(y_all.begin(), y_all.begin() + N * NO);
  const std::vector<double> dx_got(dx_all.begin(), dx_all.begin() + N * K);
  const std::vector<double> dw_got = as_double(download<T>(dw));
  if constexpr (std::is_same_v<T, bf16>) {
    EXPECT_TRUE(close(y_got, y_want, kGpuBf16Rtol * rms(y_want), kGpuBf16Rtol)) << "y";
    EXPECT_TRUE(close(dx_got, dx_want, kGpuBf16Rtol * rms(dx_want), kGpuBf16Rtol)) << "dx";
    EXPECT_TRUE(close(dw_got, dw_want, kGpuBf16Rtol * rms(dw_want), kGpuBf16Rtol)) << "dw";
  } else {
    EXPECT_TRUE(close(y_got, y_want, kF32Atol, kGpuF32Rtol)) << "y";
    EXPECT_TRUE(close(dx_got, dx_want, kF32Atol, kGpuF32Rtol)) << "dx";
    EXPECT_TRUE(close(dw_got, dw_want, kF32Atol, kGpuF32Rtol)) << "dw";
  }
  // Empty groups get an all-zero dw (the CPU writes zeros there too; this says it loudly).
  for (int64_t e = 0; e < E; ++e) {
    if (c.counts[size_t(e)] != 0) continue;
    for (int64_t i = 0; i < NO * K; ++i) {
      ASSERT_EQ(dw_got[size_t(e * NO * K + i)], 0.0) << "dw of empty group " << e;
    }
  }

  // Only dx, then only dw (the other null): the same values.
  Tensor dx2 = Tensor::full({max_rows, K}, kSentinel, dtype_of<T>(), Device::cuda);
  Tensor dw2 = Tensor::full({E, NO, K}, kSentinel, dtype_of<T>(), Device::cuda);
  cuda::grouped_matmul_backward<T>(dev<T>(dx2), nullptr, dev<T>(dyd), dev<T>(xd), dev<T>(wd),
                                   dev<int32_t>(offd), E, K, NO, max_rows, stream, impl);
  cuda::grouped_matmul_backward<T>(nullptr, dev<T>(dw2), dev<T>(dyd), dev<T>(xd), dev<T>(wd),
                                   dev<int32_t>(offd), E, K, NO, max_rows, stream, impl);
  EXPECT_TRUE(close(as_double(download<T>(dx2)), dx_all, 0, 0));
  EXPECT_TRUE(close(as_double(download<T>(dw2)), dw_got, 0, 0));  // and deterministic
}

std::vector<int32_t> random_counts(int64_t E, int max_count, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> c(static_cast<size_t>(E));
  for (auto& v : c) v = rng.uniform() < 0.25 ? 0 : int32_t(rng.below(max_count + 1));
  c[size_t(E / 2)] = 0;  // at least one empty group
  return c;
}

const std::vector<GemmCase>& gemm_cases() {
  static const std::vector<GemmCase> cases = {
      {"OneGroupAligned", {128}, 64, 64},
      {"OneGroupTails", {100}, 40, 72},
      {"EmptyAndTinyGroups", {0, 65, 1, 0, 130, 7, 64, 0}, 40, 24},
      {"AllOnLastGroup", {0, 0, 200}, 17, 33, 30},
      {"NoRows", {0, 0, 0, 0}, 16, 16, 10},
      {"OneRowEach", {1, 1, 1, 1, 1}, 3, 5},
      {"KBelowOneStep", {20, 3}, 5, 70},
      {"E128", random_counts(128, 5, 43), 32, 48, 64},
      {"E8Wide", random_counts(8, 300, 44), 96, 160},
      // Shapes the hopper kernels take (K, N_out multiples of 8), around their 128 × 128 tiles
      // and 64-step reduction: groups of several row tiles and a ragged last one, a reduction
      // that ends inside a stage, more column tiles than one, a K below one box.
      {"HopperTilesAndTails", {300, 0, 129, 1, 128, 0, 257}, 200, 136, 70},
      {"HopperLongReduction", {140, 60}, 520, 264, 5},
      {"HopperNarrow", {17, 0, 3}, 8, 16, 3},
      {"HopperE64", random_counts(64, 150, 45), 64, 72, 33},
  };
  return cases;
}

using GpuGroupedMatmul = GpuTestWithParam<GemmCase>;

TEST_P(GpuGroupedMatmul, F32MatchesCpu) { check_case<float>(GetParam(), Impl::automatic, stream()); }
TEST_P(GpuGroupedMatmul, Bf16MatchesCpu) { check_case<bf16>(GetParam(), Impl::automatic, stream()); }
TEST_P(GpuGroupedMatmul, Bf16TiledMatchesCpu) { check_case<bf16>(GetParam(), Impl::tiled, stream()); }
TEST_P(GpuGroupedMatmul, Bf16HopperMatchesCpu) {
  const GemmCase& c = GetParam();
  const std::string why = cuda::grouped_matmul_hopper_unsupported<bf16>(c.k_in, c.n_out, {});
  if (!why.empty()) GTEST_SKIP() << why;
  check_case<bf16>(c, Impl::hopper, stream());
}

INSTANTIATE_TEST_SUITE_P(Groups, GpuGroupedMatmul, ::testing::ValuesIn(gemm_cases()),
                         [](const auto& info) { return info.param.name; });

using GpuGroupedMatmulErrors = GpuTest;

TEST_F(GpuGroupedMatmulErrors, RejectsTooManyGroups) {
  const int64_t E = cuda::kGroupedMatmulMaxGroups + 1;
  const Tensor off = Tensor::zeros({E + 1}, DType::i32, Device::cuda);
  const Tensor x = Tensor::zeros({1, 4}, DType::f32, Device::cuda);
  const Tensor w = Tensor::zeros({E, 4, 4}, DType::f32, Device::cuda);
  Tensor y = Tensor::zeros({1, 4}, DType::f32, Device::cuda);
  EXPECT_NE(error_of([&] {
              cuda::grouped_matmul_forward<float>(dev<float>(y), dev<float>(x), dev<float>(w),
                                                  dev<int32_t>(off), E, 4, 4, 1, stream());
            }).find("E = 1025"),
            std::string::npos);
}

// Asking for hopper where it does not apply names the reason instead of falling back.
TEST_F(GpuGroupedMatmulErrors, HopperRefusesWhatItCannotRun) {
  const Tensor off = Tensor::zeros({2}, DType::i32, Device::cuda);
  const Tensor x = Tensor::zeros({1, 12}, DType::f32, Device::cuda);
  const Tensor w = Tensor::zeros({1, 8, 12}, DType::f32, Device::cuda);
  Tensor y = Tensor::zeros({1, 8}, DType::f32, Device::cuda);
  const std::string f32 = error_of([&] {
    cuda::grouped_matmul_forward<float>(dev<float>(y), dev<float>(x), dev<float>(w),
                                        dev<int32_t>(off), 1, 12, 8, 1, stream(), Impl::hopper);
  });
  EXPECT_NE(f32.find("impl = hopper, but the hopper grouped GEMM is bf16 only"), std::string::npos) << f32;
  const Tensor xb = Tensor::zeros({1, 12}, DType::bf16, Device::cuda);
  const Tensor wb = Tensor::zeros({1, 8, 12}, DType::bf16, Device::cuda);
  Tensor yb = Tensor::zeros({1, 8}, DType::bf16, Device::cuda);
  const std::string odd = error_of([&] {
    cuda::grouped_matmul_forward<bf16>(dev<bf16>(yb), dev<bf16>(xb), dev<bf16>(wb),
                                       dev<int32_t>(off), 1, 12, 8, 1, stream(), Impl::hopper);
  });
  EXPECT_NE(odd.find("impl = hopper, but"), std::string::npos) << odd;
  if (cuda::grouped_matmul_hopper_unsupported<bf16>(16, 8, {}).empty()) {  // a Hopper GPU: the size
    EXPECT_NE(odd.find("K = 12 and N_out = 8 must be multiples of 8"), std::string::npos) << odd;
  }
}

}  // namespace
}  // namespace remoe::test
