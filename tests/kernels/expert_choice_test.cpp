// Expert-choice routing (kernels/expert_choice.h): a hand-worked case with ties, capacity
// respected exactly on random inputs, f64 gradient checks, f32 against f64, errors.
#include <algorithm>
#include <cmath>

#include "tests/test_util.h"

namespace remoe::test {
namespace {

std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }

std::vector<double> softmax_row(const std::vector<double>& z) {
  const double m = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) s += p[i] = std::exp(z[i] - m);
  for (double& x : p) x /= s;
  return p;
}

TEST(ExpertChoice, HandWorkedWithTies) {
  // Tokens 0 and 1 have equal rows; token 2 prefers expert 2. Capacity 2 (T = 3, E = 3, k = 1,
  // factor 2: ceil(3 · 1/3 · 2) = 2):
  //   expert 0: p = .665, .665, .045 → tokens 0, 1
  //   expert 1: p = .245, .245, .045 → tokens 0, 1
  //   expert 2: p = .090, .090, .910 → token 2, then token 0 (the tie goes to the lower index)
  const std::vector<double> zv = {2, 1, 0, 2, 1, 0, 0, 0, 3};
  for (DType dtype : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dtype));
    const double tol = dtype == DType::f64 ? 1e-15 : 1e-7;
    const int64_t c = ops::expert_capacity(3, 1, 3, 2.0);
    ASSERT_EQ(c, 2);
    const ops::Routing r =
        ops::expert_choice_router(ops::cast(Tensor::from_vector<double>({3, 3}, zv), dtype), c);
    const std::vector<int32_t> mask = {1, 1, 1, 1, 1, 0, 0, 0, 1};
    EXPECT_EQ(ints(r.mask), mask);
    std::vector<double> probs, gates;
    for (int t = 0; t < 3; ++t) {
      const auto p = softmax_row({zv.begin() + 3 * t, zv.begin() + 3 * t + 3});
      probs.insert(probs.end(), p.begin(), p.end());
    }
    for (size_t i = 0; i < 9; ++i) gates.push_back(mask[i] ? probs[i] : 0.0);
    EXPECT_TRUE(all_close(values(r.probs), probs, tol, tol));
    EXPECT_TRUE(all_close(values(r.gates), gates, tol, tol));
    EXPECT_EQ(ints(r.expert_counts), (std::vector<int32_t>{2, 2, 2}));
    EXPECT_EQ(ints(r.token_counts), (std::vector<int32_t>{3, 2, 1}));
    EXPECT_EQ(r.nonzero.item(), 6.0);
  }
}

TEST(ExpertChoice, CapacityZeroTakesNothingAndAtLeastTTakesAll) {
  Rng rng(1);
  const Tensor z = randn({4, 3}, DType::f64, rng);
  EXPECT_EQ(ints(ops::expert_choice_router(z, 0).mask), std::vector<int32_t>(12, 0));
  const ops::Routing all = ops::expert_choice_router(z, 9);
  EXPECT_EQ(ints(all.mask), std::vector<int32_t>(12, 1));
  EXPECT_TRUE(all_close(all.gates, all.probs, 0, 0));
}

struct EcCase {
  int64_t T, E, capacity;
};
std::ostream& operator<<(std::ostream& os, const EcCase& c) {
  return os << "T" << c.T << "_E" << c.E << "_C" << c.capacity;
}

class ExpertChoiceTest : public ::testing::TestWithParam<EcCase> {};

TEST_P(ExpertChoiceTest, EveryExpertTakesExactlyItsCapacityOfTheLargest) {
  const EcCase c = GetParam();
  Rng rng(2);
  const Tensor z = randn({c.T, c.E}, DType::f64, rng, 2.0);
  const ops::Routing r = ops::expert_choice_router(z, c.capacity);
  const auto p = values(r.probs);
  const auto m = ints(r.mask);
  for (int64_t e = 0; e < c.E; ++e) {
    int64_t taken = 0;
    double smallest_taken = 2, largest_left = -1;
    for (int64_t t = 0; t < c.T; ++t) {
      const size_t i = size_t(t * c.E + e);
      if (m[i]) ++taken, smallest_taken = std::min(smallest_taken, p[i]);
      else largest_left = std::max(largest_left, p[i]);
    }
    EXPECT_EQ(taken, std::min(c.capacity, c.T)) << "expert " << e;
    EXPECT_GE(smallest_taken, largest_left) << "expert " << e;
  }
}

TEST_P(ExpertChoiceTest, GradCheck) {
  const EcCase c = GetParam();
  Rng rng(3);
  const Tensor z = param({c.T, c.E}, rng, "z", 2.0);
  const int64_t cap = c.capacity;
  expect_gradcheck(
      [=](const std::vector<Tensor>& in) {
        const ops::Routing r = ops::expert_choice_router(in[0], cap);
        return ops::add(r.gates, ops::scale(r.probs, 0.7));
      },
      {z});
}

TEST_P(ExpertChoiceTest, Float32AgreesWithFloat64) {
  const EcCase c = GetParam();
  Rng rng(4);
  const Tensor raw = randn({c.T, c.E}, DType::f64, rng, 2.0);
  Tensor z64 = raw, z32 = ops::cast(raw, DType::f32);
  z64.set_requires_grad(true);
  z32.set_requires_grad(true);
  const auto route = [&](const Tensor& z) {
    const ops::Routing r = ops::expert_choice_router(z, c.capacity);
    Rng wr(5);
    backward(r.gates, ops::cast(randn({c.T, c.E}, DType::f64, wr), z.dtype()));
    return r;
  };
  const ops::Routing r64 = route(z64), r32 = route(z32);
  EXPECT_EQ(ints(r32.mask), ints(r64.mask));
  EXPECT_TRUE(all_close(r32.gates, r64.gates, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(z32.grad(), z64.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, ExpertChoiceTest,
                         ::testing::Values(EcCase{1, 2, 1}, EcCase{1, 4, 1}, EcCase{8, 4, 2},
                                           EcCase{7, 5, 3}, EcCase{6, 3, 6}, EcCase{16, 8, 5}),
                         ::testing::PrintToStringParamName());

TEST(ExpertChoice, Errors) {
  std::string msg = error_of([] { ops::expert_choice_router(Tensor::zeros({3, 2}, DType::f32), -1); });
  EXPECT_NE(msg.find("expert_choice_router"), std::string::npos) << msg;
  EXPECT_NE(msg.find("capacity must be >= 0, got -1"), std::string::npos) << msg;
  msg = error_of([] { ops::expert_choice_router(Tensor::zeros({3}, DType::f32), 1); });
  EXPECT_NE(msg.find("2-D"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
