// CUDA permutation and row gather against the CPU reference (kernels/permute.h). Skips
// without a visible GPU. The indices are integers and the gathers copies or e-ordered sums, so
// f32 and f64 must match exactly; bf16 sums round once, to the bf16 tolerance.
#include <string>

#include "kernels/permute.h"
#include "tests/gpu/moe_gpu_util.h"
#include "tests/kernels/dispatch_masks.h"

namespace remoe::test {
namespace {

struct PermuteCase {
  int64_t T, E;
  MaskKind kind;
  bool none_active = false;  // N = 0: every token idle
};

std::vector<int32_t> case_mask(const PermuteCase& c, uint64_t seed) {
  if (c.none_active || c.T * c.E == 0) return std::vector<int32_t>(size_t(c.T * c.E), 0);
  return make_mask_values(c.T, c.E, c.kind, seed);
}

struct Indices {
  std::vector<int32_t> offsets, token_index, row_of;
};

Indices cpu_indices(const std::vector<int32_t>& mask, int64_t T, int64_t E) {
  Indices r;
  r.offsets.resize(size_t(E + 1));
  r.row_of.resize(size_t(T * E));
  r.token_index.resize(size_t(T * E));  // capacity; trimmed to N below
  cpu::permute_indices(r.offsets.data(), r.token_index.data(), r.row_of.data(), mask.data(), T, E);
  r.token_index.resize(size_t(r.offsets[size_t(E)]));
  return r;
}

Indices gpu_indices(const std::vector<int32_t>& mask, int64_t T, int64_t E, cudaStream_t stream) {
  const Tensor m = upload<int32_t>({T, E}, mask);
  Tensor offsets = Tensor::full({E + 1}, 77, DType::i32, Device::cuda);
  Tensor token_index = Tensor::full({T * E}, 77, DType::i32, Device::cuda);
  Tensor row_of = Tensor::full({T, E}, 77, DType::i32, Device::cuda);
  cuda::permute_indices(dev<int32_t>(offsets), dev<int32_t>(token_index), dev<int32_t>(row_of),
                        dev<int32_t>(m), T, E, stream);
  Indices r{download<int32_t>(offsets), download<int32_t>(token_index), download<int32_t>(row_of)};
  const int32_t n = r.offsets.back();
  if (n >= 0 && n <= T * E) {
    for (size_t i = size_t(n); i < r.token_index.size(); ++i)
      EXPECT_EQ(r.token_index[i], 77) << "token_index written past N at " << i;
    r.token_index.resize(size_t(n));
  }
  return r;
}

using GpuPermute = GpuTestWithParam<PermuteCase>;

TEST_P(GpuPermute, IndicesMatchCpuExactly) {
  const PermuteCase c = GetParam();
  const std::vector<int32_t> mask = case_mask(c, 31);
  const Indices want = cpu_indices(mask, c.T, c.E), got = gpu_indices(mask, c.T, c.E, stream());
  EXPECT_EQ(got.offsets, want.offsets);
  EXPECT_EQ(got.token_index, want.token_index);
  EXPECT_EQ(got.row_of, want.row_of);
  if (c.none_active) {
    EXPECT_EQ(want.offsets.back(), 0);
  }
}

template <typename T>
void check_gather(const PermuteCase& c, int64_t dim, cudaStream_t stream) {
  const std::vector<int32_t> mask = case_mask(c, 32);
  const Indices idx = cpu_indices(mask, c.T, c.E);
  const int64_t n = idx.offsets.back();
  Rng rng(33);
  std::vector<float> x32 = normal_f32(c.T * dim, rng), dout32 = normal_f32(n * dim, rng);
  // bf16 inputs are rounded first; the reference runs on the rounded values in f32.
  if constexpr (std::is_same_v<T, bf16>) {
    x32 = to_f32(to_bf16(x32));
    dout32 = to_f32(to_bf16(dout32));
  }
  // The reference sums in f64 for f64 (the kernel's own type), in f32 otherwise.
  using R = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const std::vector<R> xr(x32.begin(), x32.end()), doutr(dout32.begin(), dout32.end());
  std::vector<R> out_want(size_t(n * dim)), dx_want(size_t(c.T * dim));
  cpu::gather_rows_forward<R>(out_want.data(), xr.data(), idx.token_index.data(), n, dim);
  cpu::gather_rows_backward<R>(dx_want.data(), doutr.data(), idx.row_of.data(), c.T, c.E, dim);

  std::vector<T> x(x32.size()), dout(dout32.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if constexpr (std::is_same_v<T, bf16>) x[i] = float_to_bf16(x32[i]); else x[i] = T(x32[i]);
  }
  for (size_t i = 0; i < dout.size(); ++i) {
    if constexpr (std::is_same_v<T, bf16>) dout[i] = float_to_bf16(dout32[i]); else dout[i] = T(dout32[i]);
  }
  const Tensor xd = upload<T>({c.T, dim}, x), doutd = upload<T>({n, dim}, dout);
  const Tensor ti = upload<int32_t>({n}, idx.token_index), ro = upload<int32_t>({c.T, c.E}, idx.row_of);
  Tensor out = Tensor::full({n, dim}, -7.0, dtype_of<T>(), Device::cuda);
  Tensor dx = Tensor::full({c.T, dim}, -7.0, dtype_of<T>(), Device::cuda);
  cuda::gather_rows_forward<T>(dev<T>(out), dev<T>(xd), dev<int32_t>(ti), n, dim, stream);
  cuda::gather_rows_backward<T>(dev<T>(dx), dev<T>(doutd), dev<int32_t>(ro), c.T, c.E, dim, stream);
  EXPECT_TRUE(close(download<T>(out), out_want, 0, 0));  // a copy
  if constexpr (std::is_same_v<T, bf16>)
    EXPECT_TRUE(close(download<T>(dx), dx_want, kGpuBf16Rtol * rms(dx_want), kGpuBf16Rtol));
  else  // the same f32 sums in the same (e ascending) order
    EXPECT_TRUE(close(download<T>(dx), dx_want, 0, 0));
}

TEST_P(GpuPermute, GatherF32MatchesCpuExactly) { check_gather<float>(GetParam(), 37, stream()); }
TEST_P(GpuPermute, GatherF64MatchesCpuExactly) { check_gather<double>(GetParam(), 5, stream()); }
TEST_P(GpuPermute, GatherBf16MatchesCpu) { check_gather<bf16>(GetParam(), 300, stream()); }

INSTANTIATE_TEST_SUITE_P(
    Masks, GpuPermute,
    ::testing::Values(PermuteCase{0, 8, MaskKind::kRandom}, PermuteCase{6, 0, MaskKind::kRandom},
                      PermuteCase{5, 4, MaskKind::kRandom, true},
                      PermuteCase{1, 1, MaskKind::kDense}, PermuteCase{7, 1, MaskKind::kRandom},
                      PermuteCase{6, 5, MaskKind::kEmptyExpert},
                      PermuteCase{33, 8, MaskKind::kAllOnOne},
                      PermuteCase{9, 4, MaskKind::kIdleTokens},
                      PermuteCase{8, 8, MaskKind::kOneRowEach},
                      PermuteCase{100, 33, MaskKind::kDense},
                      PermuteCase{1000, 8, MaskKind::kRandom},
                      PermuteCase{257, 128, MaskKind::kEmptyExpert},
                      PermuteCase{300, 128, MaskKind::kIdleTokens}),
    [](const auto& info) {
      const PermuteCase& c = info.param;
      return std::string(c.none_active ? "NoneActive" : kind_name(c.kind)) + "_T" +
             std::to_string(c.T) + "_E" + std::to_string(c.E);
    });

}  // namespace
}  // namespace remoe::test
