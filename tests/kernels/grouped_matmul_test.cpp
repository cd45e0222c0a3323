#include "tests/kernels/dispatch_masks.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

// Groups come from a routing mask, so each case's offsets carry its edge: empty groups, one-row
// groups, every row in one group, E = 1.
class GroupedMatmulCases : public ::testing::TestWithParam<DispatchCase> {};

// Expert e's rows times w[e]ᵀ, one dense product per expert.
std::vector<double> per_expert_reference(const Tensor& x, const Tensor& w,
                                         const std::vector<int32_t>& offsets) {
  const int64_t E = w.dim(0), n_out = w.dim(1), k = w.dim(2);
  const std::vector<double> xv = values(x), wv = values(w);
  std::vector<double> y(size_t(x.dim(0) * n_out), 0.0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = offsets[size_t(e)]; r < offsets[size_t(e + 1)]; ++r)
      for (int64_t j = 0; j < n_out; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p)
          acc += xv[size_t(r * k + p)] * wv[size_t((e * n_out + j) * k + p)];
        y[size_t(r * n_out + j)] = acc;
      }
  return y;
}

TEST_P(GroupedMatmulCases, ForwardMatchesPerExpertMatmul) {
  const DispatchCase c = GetParam();
  const ops::Permutation p = ops::permute(make_mask(c, 31));
  Rng rng(32);
  const Tensor x = randn({p.n_rows, c.d_in}, DType::f64, rng);
  const Tensor w = randn({c.E, c.d_out, c.d_in}, DType::f64, rng);
  const Tensor y = ops::grouped_matmul(x, w, p);
  ASSERT_EQ(y.shape(), (Shape{p.n_rows, c.d_out}));
  const std::vector<int32_t> offsets = p.expert_offsets.to_vector<int32_t>();
  EXPECT_TRUE(all_close(values(y), per_expert_reference(x, w, offsets), 1e-12, 1e-12));
}

TEST_P(GroupedMatmulCases, GradCheck) {
  const DispatchCase c = GetParam();
  const ops::Permutation p = ops::permute(make_mask(c, 33));
  Rng rng(34);
  const Tensor x = param({p.n_rows, c.d_in}, rng, "x");
  const Tensor w = param({c.E, c.d_out, c.d_in}, rng, "w");
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) { return ops::grouped_matmul(in[0], in[1], p); }, {x, w});
}

TEST_P(GroupedMatmulCases, WeightGradIsZeroForEmptyGroups) {
  const DispatchCase c = GetParam();
  const ops::Permutation p = ops::permute(make_mask(c, 35));
  Rng rng(36);
  const Tensor x = randn({p.n_rows, c.d_in}, DType::f64, rng);
  const Tensor w = param({c.E, c.d_out, c.d_in}, rng, "w");
  const Tensor y = ops::grouped_matmul(x, w, p);
  backward(y, randn(y.shape(), DType::f64, rng));
  ASSERT_TRUE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined()) << "x does not require grad";
  const std::vector<int32_t> off = p.expert_offsets.to_vector<int32_t>();
  const std::vector<double> dw = values(w.grad());
  const int64_t block = c.d_out * c.d_in;
  for (int64_t e = 0; e < c.E; ++e) {
    double norm = 0;
    for (int64_t i = 0; i < block; ++i) norm += std::abs(dw[size_t(e * block + i)]);
    if (off[size_t(e)] == off[size_t(e + 1)])
      EXPECT_EQ(norm, 0.0) << "empty expert " << e;
    else
      EXPECT_GT(norm, 0.0) << "expert " << e;
  }
}

TEST_P(GroupedMatmulCases, Float32AgreesWithFloat64) {
  const DispatchCase c = GetParam();
  const ops::Permutation p = ops::permute(make_mask(c, 37));
  Rng rng(38);
  const Tensor x = randn({p.n_rows, c.d_in}, DType::f64, rng);
  const Tensor w = randn({c.E, c.d_out, c.d_in}, DType::f64, rng);
  Tensor x32 = ops::cast(x, DType::f32), w32 = ops::cast(w, DType::f32);
  EXPECT_TRUE(
      all_close(ops::grouped_matmul(x32, w32, p), ops::grouped_matmul(x, w, p), 1e-5, 1e-4));

  // Backward too: the same seed through both precisions.
  x32.set_requires_grad(true);
  w32.set_requires_grad(true);
  const Tensor xp = x.clone().set_requires_grad(true), wp = w.clone().set_requires_grad(true);
  const Tensor seed = randn({p.n_rows, c.d_out}, DType::f64, rng);
  backward(ops::grouped_matmul(x32, w32, p), ops::cast(seed, DType::f32));
  backward(ops::grouped_matmul(xp, wp, p), seed);
  EXPECT_TRUE(all_close(x32.grad(), xp.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(w32.grad(), wp.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Masks, GroupedMatmulCases, ::testing::ValuesIn(dispatch_cases()),
                         case_name);

TEST(GroupedMatmul, HandComputedTwoExperts) {
  // Rows 0-1 on expert 0, row 2 on expert 1; one output feature each.
  const ops::Permutation p =
      ops::permute(Tensor::from_vector<int32_t>({3, 2}, {1, 0, 1, 0, 0, 1}));
  const Tensor x = Tensor::from_vector<double>({3, 2}, {1, 2, 3, 4, 5, 6});
  const Tensor w = Tensor::from_vector<double>({2, 1, 2}, {1, -1, 2, 0.5});
  EXPECT_EQ(values(ops::grouped_matmul(x, w, p)), (std::vector<double>{-1, -1, 13}));
}

TEST(GroupedMatmul, NoRowsGivesEmptyOutputAndZeroWeightGrad) {
  const ops::Permutation p = ops::permute(Tensor::zeros({4, 3}, DType::i32));
  Rng rng(39);
  const Tensor x = param({0, 5}, rng, "x");
  const Tensor w = param({3, 2, 5}, rng, "w");
  const Tensor y = ops::grouped_matmul(x, w, p);
  EXPECT_EQ(y.shape(), (Shape{0, 2}));
  backward(y, Tensor::zeros({0, 2}, DType::f64));
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(values(w.grad()), std::vector<double>(30, 0.0));
  EXPECT_EQ(x.grad().shape(), (Shape{0, 5}));
}

TEST(GroupedMatmul, ShapeErrorsNameOpAndShapes) {
  const ops::Permutation p = ops::permute(Tensor::from_vector<int32_t>({3, 2}, {1, 0, 1, 1, 0, 1}));
  const Tensor x = Tensor::zeros({4, 5}, DType::f32);
  std::string msg =
      error_of([&] { ops::grouped_matmul(x, Tensor::zeros({3, 2, 5}, DType::f32), p); });
  EXPECT_NE(msg.find("grouped_matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 2, 5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 2"), std::string::npos) << msg;
  msg = error_of([&] { ops::grouped_matmul(x, Tensor::zeros({2, 2, 6}, DType::f32), p); });
  EXPECT_NE(msg.find("x (4, 5) has 5 columns but w (2, 2, 6) expects k_in = 6"),
            std::string::npos) << msg;
  msg = error_of([&] { ops::grouped_matmul(Tensor::zeros({3, 5}, DType::f32),
                                           Tensor::zeros({2, 2, 5}, DType::f32), p); });
  EXPECT_NE(msg.find("x (3, 5) has 3 at dim 0, expected 4"), std::string::npos) << msg;
  msg = error_of([&] { ops::grouped_matmul(x, Tensor::zeros({2, 5}, DType::f32), p); });
  EXPECT_NE(msg.find("w must be 3-D"), std::string::npos) << msg;
  msg = error_of([&] { ops::grouped_matmul(x, Tensor::zeros({2, 2, 5}, DType::f64), p); });
  EXPECT_NE(msg.find("dtypes differ"), std::string::npos) << msg;
}

TEST(GroupedMatmul, DecreasingOffsetsAreAnError) {
  ops::Permutation p = ops::permute(Tensor::from_vector<int32_t>({3, 2}, {1, 0, 1, 1, 0, 1}));
  p.expert_offsets = Tensor::from_vector<int32_t>({3}, {0, 5, 4});
  p.n_rows = 4;
  const std::string msg = error_of([&] {
    ops::grouped_matmul(Tensor::zeros({4, 2}, DType::f64), Tensor::zeros({2, 1, 2}, DType::f64), p);
  });
  EXPECT_NE(msg.find("decreases at expert 1"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
