// CUDA weighted combine against the CPU reference (kernels/combine.h). Skips without a
// visible GPU. The GPU sums in fp32 where the CPU sums in double: y to the f32 tolerance;
// dgates (a dot product over d) to atol 1e-4; the scaled rows are one f32 product, exact.
// bf16 rows: the reference runs in f32 on the rounded values, compared at the bf16 tolerance.
#include <string>

#include "kernels/combine.h"
#include "kernels/permute.h"
#include "tests/gpu/moe_gpu_util.h"
#include "tests/kernels/dispatch_masks.h"

namespace remoe::test {
namespace {

constexpr double kDotAtol = 1e-4;

struct CombineCase {
  int64_t T, E, d;
  MaskKind kind;
  bool none_active = false;
};

template <typename T>
void check_combine(const CombineCase& c, cudaStream_t stream) {
  const int64_t TT = c.T, E = c.E, d = c.d;
  const std::vector<int32_t> mask = (c.none_active || TT * E == 0)
                                        ? std::vector<int32_t>(size_t(TT * E), 0)
                                        : make_mask_values(TT, E, c.kind, 51);
  std::vector<int32_t> offsets(size_t(E + 1)), token_index(size_t(TT * E)), row_of(size_t(TT * E));
  cpu::permute_indices(offsets.data(), token_index.data(), row_of.data(), mask.data(), TT, E);
  const int64_t n = offsets.back();

  Rng rng(52);
  std::vector<float> gates(size_t(TT * E), 0.0f);
  for (size_t i = 0; i < gates.size(); ++i)
    if (mask[i]) gates[i] = float(0.5 + rng.uniform());
  std::vector<float> out = normal_f32(n * d, rng), dy = normal_f32(TT * d, rng);
  if constexpr (std::is_same_v<T, bf16>) {
    out = to_f32(to_bf16(out));
    dy = to_f32(to_bf16(dy));
  }
  std::vector<float> y_want(size_t(TT * d)), dout_want(size_t(n * d)), dg_want(size_t(TT * E));
  cpu::combine_forward<float>(y_want.data(), out.data(), gates.data(), row_of.data(), TT, E, d);
  cpu::combine_backward<float>(dout_want.data(), dg_want.data(), dy.data(), out.data(),
                               gates.data(), row_of.data(), TT, E, d, n);

  auto stored = [](const std::vector<float>& v) {
    if constexpr (std::is_same_v<T, bf16>) return to_bf16(v);
    else return v;
  };
  const Tensor outd = upload<T>({n, d}, stored(out)), dyd = upload<T>({TT, d}, stored(dy));
  const Tensor gd = upload<float>({TT, E}, gates), rod = upload<int32_t>({TT, E}, row_of);
  Tensor y = Tensor::full({TT, d}, -7.0, dtype_of<T>(), Device::cuda);
  Tensor dout = Tensor::full({n, d}, -7.0, dtype_of<T>(), Device::cuda);
  Tensor dg = Tensor::full({TT, E}, -7.0, DType::f32, Device::cuda);
  cuda::combine_forward<T>(dev<T>(y), dev<T>(outd), dev<float>(gd), dev<int32_t>(rod), TT, E, d,
                           stream);
  cuda::combine_backward<T>(dev<T>(dout), dev<float>(dg), dev<T>(dyd), dev<T>(outd),
                            dev<float>(gd), dev<int32_t>(rod), TT, E, d, n, stream);
  const std::vector<T> y_got = download<T>(y), dout_got = download<T>(dout);
  const std::vector<float> dg_got = download<float>(dg);
  if constexpr (std::is_same_v<T, bf16>) {
    EXPECT_TRUE(close(y_got, y_want, kGpuBf16Rtol * rms(y_want), kGpuBf16Rtol)) << "y";
    EXPECT_TRUE(close(dout_got, dout_want, kGpuBf16Rtol * rms(dout_want), kGpuBf16Rtol)) << "dexpert_out";
    EXPECT_TRUE(close(dg_got, dg_want, kGpuBf16Rtol * rms(dg_want), kGpuBf16Rtol)) << "dgates";
  } else {
    EXPECT_TRUE(close(y_got, y_want, kGpuF32Atol, kGpuF32Rtol)) << "y";
    EXPECT_TRUE(close(dout_got, dout_want, 0, 0)) << "dexpert_out";
    EXPECT_TRUE(close(dg_got, dg_want, kDotAtol, kGpuF32Rtol)) << "dgates";
  }
  // Idle tokens get y = 0 and inactive pairs dgates = 0, exactly.
  const std::vector<double> y_values = as_double(y_got);
  for (int64_t t = 0; t < TT; ++t) {
    bool any = false;
    for (int64_t e = 0; e < E; ++e) {
      any = any || mask[size_t(t * E + e)];
      if (!mask[size_t(t * E + e)]) {
        ASSERT_EQ(dg_got[size_t(t * E + e)], 0.0f) << "inactive pair " << t << ", " << e;
      }
    }
    if (any) continue;
    for (int64_t j = 0; j < d; ++j) {
      ASSERT_EQ(y_values[size_t(t * d + j)], 0.0) << "idle token " << t;
    }
  }

  // One output at a time (the other null), and bit-for-bit repeats.
  Tensor dout2 = Tensor::full({n, d}, -7.0, dtype_of<T>(), Device::cuda);
  Tensor dg2 = Tensor::full({TT, E}, -7.0, DType::f32, Device::cuda);
  cuda::combine_backward<T>(dev<T>(dout2), nullptr, dev<T>(dyd), dev<T>(outd), dev<float>(gd),
                            dev<int32_t>(rod), TT, E, d, n, stream);
  cuda::combine_backward<T>(nullptr, dev<float>(dg2), dev<T>(dyd), dev<T>(outd), dev<float>(gd),
                            dev<int32_t>(rod), TT, E, d, n, stream);
  EXPECT_TRUE(close(download<T>(dout2), dout_got, 0, 0));
  EXPECT_TRUE(close(download<float>(dg2), dg_got, 0, 0));
}

using GpuCombine = GpuTestWithParam<CombineCase>;

TEST_P(GpuCombine, F32MatchesCpu) { check_combine<float>(GetParam(), stream()); }
TEST_P(GpuCombine, Bf16MatchesCpu) { check_combine<bf16>(GetParam(), stream()); }

INSTANTIATE_TEST_SUITE_P(
    Masks, GpuCombine,
    ::testing::Values(CombineCase{0, 8, 16, MaskKind::kRandom},
                      CombineCase{5, 4, 7, MaskKind::kRandom, true},
                      CombineCase{1, 1, 3, MaskKind::kDense},
                      CombineCase{6, 5, 130, MaskKind::kEmptyExpert},
                      CombineCase{33, 8, 64, MaskKind::kAllOnOne},
                      CombineCase{9, 4, 5, MaskKind::kIdleTokens},
                      CombineCase{8, 8, 1, MaskKind::kOneRowEach},
                      CombineCase{1000, 8, 64, MaskKind::kRandom},
                      CombineCase{300, 128, 200, MaskKind::kIdleTokens}),
    [](const auto& info) {
      const CombineCase& c = info.param;
      return std::string(c.none_active ? "NoneActive" : kind_name(c.kind)) + "_T" +
             std::to_string(c.T) + "_E" + std::to_string(c.E) + "_d" + std::to_string(c.d);
    });

}  // namespace
}  // namespace remoe::test
