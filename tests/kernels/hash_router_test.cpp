// Hash routing (kernels/hash_router.h): a fixed function of the token id, pinned by value and
// against an independent splitmix64; k consecutive experts with gate 1/k; errors.
#include "kernels/hash_router.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }

// splitmix64 (Vigna), written out again: the output of the generator seeded at x.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// splitmix64(id) mod 4 for ids 0..7, worked out once (in Python, from the definition).
const std::vector<int> kPinned = {3, 1, 2, 1, 2, 2, 0, 3};

int expert_of(const std::vector<int32_t>& mask, int64_t t, int64_t E) {
  for (int64_t e = 0; e < E; ++e)
    if (mask[size_t(t * E + e)]) return int(e);
  return -1;
}

TEST(HashRouter, PinnedExpertsOfTheFirstIds) {
  // A checkpoint's routing depends on these: changing the hash changes every hash-routed model.
  const Tensor ids = Tensor::from_vector<int32_t>({8}, {0, 1, 2, 3, 4, 5, 6, 7});
  const auto mask = ints(ops::hash_router(ids, 4, 1, DType::f64).mask);
  std::vector<int> got;
  for (int64_t t = 0; t < 8; ++t) got.push_back(expert_of(mask, t, 4));
  EXPECT_EQ(got, kPinned);
}

TEST(HashRouter, AFixedFunctionOfTheTokenWhereverItStands) {
  const int64_t E = 8;
  // The same ids in different orders and batches get the same experts.
  const std::vector<int32_t> a = {65, 66, 67, 65, 10, 255, 66, 0};
  const std::vector<int32_t> b = {255, 0, 65, 10, 67, 66, 66, 65};
  const auto ma = ints(ops::hash_router(Tensor::from_vector<int32_t>({8}, a), E, 1, DType::f32).mask);
  const auto mb = ints(ops::hash_router(Tensor::from_vector<int32_t>({8}, b), E, 1, DType::f32).mask);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(expert_of(ma, int64_t(i), E), int(splitmix64(uint64_t(a[i])) % E)) << "id " << a[i];
    EXPECT_EQ(expert_of(mb, int64_t(i), E), int(splitmix64(uint64_t(b[i])) % E)) << "id " << b[i];
  }
  EXPECT_EQ(cpu::hash_token(12345), splitmix64(12345));
}

TEST(HashRouter, KConsecutiveExpertsWithGateOneOverK) {
  const int64_t E = 5;
  const std::vector<int32_t> ids = {3, 77, 200};
  const ops::Routing r = ops::hash_router(Tensor::from_vector<int32_t>({3}, ids), E, 2, DType::f64);
  std::vector<double> gates(15, 0.0);
  std::vector<int32_t> counts(5, 0);
  for (size_t t = 0; t < 3; ++t) {
    const uint64_t first = splitmix64(uint64_t(ids[t])) % E;
    for (uint64_t i = 0; i < 2; ++i) {
      gates[t * 5 + (first + i) % E] = 0.5;
      ++counts[(first + i) % E];
    }
  }
  EXPECT_TRUE(all_close(values(r.gates), gates, 0, 0));
  EXPECT_EQ(ints(r.expert_counts), counts);
  EXPECT_EQ(ints(r.token_counts), (std::vector<int32_t>{2, 2, 2}));
  EXPECT_EQ(r.nonzero.item(), 6.0);
  EXPECT_FALSE(r.probs.defined());
  EXPECT_FALSE(r.gates.requires_grad());
}

TEST(HashRouter, Errors) {
  const Tensor ids = Tensor::from_vector<int32_t>({2}, {1, 2});
  std::string msg = error_of([&] { ops::hash_router(ids, 4, 5, DType::f32); });
  EXPECT_NE(msg.find("hash_router: k = 5"), std::string::npos) << msg;
  msg = error_of([&] { ops::hash_router(Tensor::zeros({2}, DType::f32), 4, 1, DType::f32); });
  EXPECT_NE(msg.find("ids"), std::string::npos) << msg;
  msg = error_of([&] { ops::hash_router(ids, 4, 1, DType::i32); });
  EXPECT_NE(msg.find("i32"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
