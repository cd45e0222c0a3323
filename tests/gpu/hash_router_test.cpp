// CUDA hash routing against the CPU reference (kernels/hash_router.h). Skips without a visible
// GPU. Everything is integer work or the one gate value 1/k (computed on the host in T), so
// every output must match the CPU's exactly: gates, mask, the counts and score_sums = gate · c_e.
#include <string>

#include "kernels/hash_router.h"
#include "tests/gpu/moe_gpu_util.h"

namespace remoe::test {
namespace {

struct HashCase {
  int64_t T, E;
  int k;
};

// Ids over the whole i32 range (negative ones too), with repeats: the same id must get the same
// experts wherever it stands.
std::vector<int32_t> ids_of(int64_t TT, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(static_cast<size_t>(TT));
  for (int64_t t = 0; t < TT; ++t) {
    const uint64_t r = rng.next_u64();
    ids[size_t(t)] =
        t % 4 == 3 && t > 0 ? ids[size_t(t / 2)] : int32_t(static_cast<uint32_t>(r >> 32));
  }
  if (TT > 1) ids[1] = -1;
  if (TT > 2) ids[2] = 50256;
  return ids;
}

template <typename T>
void check_hash(const HashCase& c, cudaStream_t stream) {
  const int64_t TT = c.T, E = c.E;
  const int k = c.k;
  const std::vector<int32_t> ids = ids_of(TT, 81 + uint64_t(TT));

  std::vector<T> gates(size_t(TT * E)), score_sums(static_cast<size_t>(E));
  std::vector<int32_t> mask(size_t(TT * E)), ec(static_cast<size_t>(E)),
      tc(static_cast<size_t>(TT));
  int32_t nz = -1;
  cpu::hash_router_forward<T>(gates.data(),
                              {mask.data(), ec.data(), score_sums.data(), tc.data(), &nz},
                              ids.data(), TT, E, k);

  const DType dt = dtype_of<T>();
  const Tensor idd = upload<int32_t>({TT}, ids);
  Tensor g = Tensor::full({TT, E}, -7.0, dt, Device::cuda);
  Tensor m = Tensor::full({TT, E}, 7, DType::i32, Device::cuda);
  Tensor ecd = Tensor::full({E}, 7, DType::i32, Device::cuda);
  Tensor ssd = Tensor::full({E}, -7.0, dt, Device::cuda);
  Tensor tcd = Tensor::full({TT}, 7, DType::i32, Device::cuda);
  Tensor nzd = Tensor::full({1}, 7, DType::i32, Device::cuda);
  cuda::hash_router_forward<T>(
      dev<T>(g),
      {dev<int32_t>(m), dev<int32_t>(ecd), dev<T>(ssd), dev<int32_t>(tcd), dev<int32_t>(nzd)},
      dev<int32_t>(idd), TT, E, k, stream);

  EXPECT_TRUE(close(download<T>(g), gates, 0, 0));
  EXPECT_EQ(download<int32_t>(m), mask);
  EXPECT_EQ(download<int32_t>(ecd), ec);
  EXPECT_TRUE(close(download<T>(ssd), score_sums, 0, 0));
  EXPECT_EQ(download<int32_t>(tcd), tc);
  EXPECT_EQ(download<int32_t>(nzd)[0], nz);
  EXPECT_EQ(nz, int32_t(TT * k));
  if (TT > 0) {
    int64_t used = 0;
    for (int32_t v : ec) used += v > 0 ? 1 : 0;
    EXPECT_GT(used, 0);
  }
}

using GpuHashRouter = GpuTestWithParam<HashCase>;

TEST_P(GpuHashRouter, F32MatchesCpuExactly) { check_hash<float>(GetParam(), stream()); }

TEST_P(GpuHashRouter, F64MatchesCpuExactly) { check_hash<double>(GetParam(), stream()); }

// E = 1, k = E (every expert), k = 3 (1/3 is inexact), wrap-around past the last expert, T not a
// multiple of the block, E past the 8192 experts a block's shared histogram holds.
INSTANTIATE_TEST_SUITE_P(Shapes, GpuHashRouter,
                         ::testing::Values(HashCase{0, 8, 2}, HashCase{1, 1, 1}, HashCase{5, 1, 1},
                                           HashCase{37, 8, 1}, HashCase{37, 8, 8},
                                           HashCase{513, 8, 3}, HashCase{1000, 64, 8},
                                           HashCase{777, 128, 5}, HashCase{3000, 3, 2},
                                           HashCase{100003, 8, 2}, HashCase{40, 9000, 7}),
                         [](const auto& info) {
                           const HashCase& c = info.param;
                           return "T" + std::to_string(c.T) + "_E" + std::to_string(c.E) + "_k" +
                                  std::to_string(c.k);
                         });

using GpuHashRouterErrors = GpuTest;

TEST_F(GpuHashRouterErrors, RejectsKOutsideOneToE) {
  Tensor g = Tensor::zeros({2, 4}, DType::f32, Device::cuda);
  Tensor m = Tensor::zeros({2, 4}, DType::i32, Device::cuda);
  Tensor c = Tensor::zeros({4}, DType::i32, Device::cuda),
         s = Tensor::zeros({4}, DType::f32, Device::cuda);
  Tensor tc = Tensor::zeros({2}, DType::i32, Device::cuda),
         nz = Tensor::zeros({1}, DType::i32, Device::cuda);
  const Tensor ids = Tensor::zeros({2}, DType::i32, Device::cuda);
  for (int k : {0, 5}) {
    const std::string msg = error_of([&] {
      cuda::hash_router_forward<float>(
          dev<float>(g),
          {dev<int32_t>(m), dev<int32_t>(c), dev<float>(s), dev<int32_t>(tc), dev<int32_t>(nz)},
          dev<int32_t>(ids), 2, 4, k, stream());
    });
    EXPECT_NE(msg.find("k = " + std::to_string(k)), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace remoe::test
