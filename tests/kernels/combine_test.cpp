#include "tests/kernels/dispatch_masks.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

class CombineCases : public ::testing::TestWithParam<DispatchCase> {};

// y[t] = Σ_e gates[t, e] · expert_out[row_of[t, e]] over active pairs, from the mask directly.
std::vector<double> combine_reference(const Tensor& expert_out, const Tensor& gates,
                                      const Tensor& mask, const Tensor& row_of) {
  const int64_t T = gates.dim(0), E = gates.dim(1), d = expert_out.dim(1);
  const std::vector<int32_t> m = mask.to_vector<int32_t>(), rows = row_of.to_vector<int32_t>();
  const std::vector<double> out = values(expert_out), g = values(gates);
  std::vector<double> y(size_t(T * d), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e)
      if (m[size_t(t * E + e)])
        for (int64_t j = 0; j < d; ++j)
          y[size_t(t * d + j)] +=
              g[size_t(t * E + e)] * out[size_t(rows[size_t(t * E + e)] * d + j)];
  return y;
}

TEST_P(CombineCases, ForwardMatchesLoopOverPairs) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 41);
  const ops::Permutation p = ops::permute(mask);
  Rng rng(42);
  const Tensor expert_out = randn({p.n_rows, c.d_out}, DType::f64, rng);
  const Tensor gates = make_gates(mask, rng, "gates");
  const Tensor y = ops::combine(expert_out, gates, p);
  ASSERT_EQ(y.shape(), (Shape{c.T, c.d_out}));
  EXPECT_TRUE(all_close(values(y), combine_reference(expert_out, gates, mask, p.row_of), 1e-12,
                        1e-12));
}

TEST_P(CombineCases, GradCheck) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 43);
  const ops::Permutation p = ops::permute(mask);
  Rng rng(44);
  const Tensor expert_out = param({p.n_rows, c.d_out}, rng, "expert_out");
  const Tensor gates = make_gates(mask, rng, "gates");
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) { return ops::combine(in[0], in[1], p); },
      {expert_out, gates});
}

TEST_P(CombineCases, GateGradIsZeroOnInactivePairs) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 45);
  const ops::Permutation p = ops::permute(mask);
  Rng rng(46);
  const Tensor expert_out = randn({p.n_rows, c.d_out}, DType::f64, rng);
  // Nonzero gates on inactive pairs too: they must neither contribute nor get a gradient.
  const Tensor gates = param({c.T, c.E}, rng, "gates");
  const Tensor y = ops::combine(expert_out, gates, p);
  EXPECT_TRUE(all_close(values(y), combine_reference(expert_out, gates, mask, p.row_of), 1e-12,
                        1e-12));
  const Tensor dy = randn(y.shape(), DType::f64, rng);
  backward(y, dy);
  const std::vector<int32_t> m = mask.to_vector<int32_t>(), rows = p.row_of.to_vector<int32_t>();
  const std::vector<double> dg = values(gates.grad()), out = values(expert_out), dyv = values(dy);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.E; ++e) {
      double expected = 0;
      if (m[size_t(t * c.E + e)])
        for (int64_t j = 0; j < c.d_out; ++j)
          expected += dyv[size_t(t * c.d_out + j)] *
                      out[size_t(rows[size_t(t * c.E + e)] * c.d_out + j)];
      EXPECT_NEAR(dg[size_t(t * c.E + e)], expected, 1e-12) << "pair (" << t << ", " << e << ")";
      if (!m[size_t(t * c.E + e)]) {
        EXPECT_EQ(dg[size_t(t * c.E + e)], 0.0);
      }
    }
}

TEST_P(CombineCases, Float32AgreesWithFloat64) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 47);
  const ops::Permutation p = ops::permute(mask);
  Rng rng(48);
  const Tensor expert_out = randn({p.n_rows, c.d_out}, DType::f64, rng);
  const Tensor gates = make_gates(mask, rng, "gates");
  Tensor out32 = ops::cast(expert_out, DType::f32), gates32 = ops::cast(gates, DType::f32);
  out32.set_requires_grad(true);
  gates32.set_requires_grad(true);
  const Tensor out64 = expert_out.clone().set_requires_grad(true);
  const Tensor gates64 = gates.clone().set_requires_grad(true);
  // Each backward right after its forward: backward clears the whole tape.
  const Tensor y64 = ops::combine(out64, gates64, p);
  const Tensor seed = randn(y64.shape(), DType::f64, rng);
  backward(y64, seed);
  const Tensor y32 = ops::combine(out32, gates32, p);
  backward(y32, ops::cast(seed, DType::f32));
  EXPECT_TRUE(all_close(y32, y64, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(out32.grad(), out64.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(gates32.grad(), gates64.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Masks, CombineCases, ::testing::ValuesIn(dispatch_cases()), case_name);

TEST(Combine, HandComputed) {
  // Token 0 on experts 0 and 1, token 1 on none, token 2 on expert 1.
  const Tensor mask = Tensor::from_vector<int32_t>({3, 2}, {1, 1, 0, 0, 0, 1});
  const ops::Permutation p = ops::permute(mask);  // rows: (0,0)→0, (0,1)→1, (2,1)→2
  const Tensor expert_out = Tensor::from_vector<double>({3, 2}, {1, 2, 10, 20, 100, 200});
  const Tensor gates = Tensor::from_vector<double>({3, 2}, {0.5, 2, 0, 0, 0, 3});
  EXPECT_EQ(values(ops::combine(expert_out, gates, p)),
            (std::vector<double>{20.5, 41, 0, 0, 300, 600}));
}

// --- the whole dispatch: combine(grouped_matmul(gather_rows(x))) ----------------------------

class DispatchComposition : public ::testing::TestWithParam<DispatchCase> {};

TEST_P(DispatchComposition, MatchesLoopOverTokensAndExperts) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 51);
  const ops::Permutation p = ops::permute(mask);
  Rng rng(52);
  const Tensor x = randn({c.T, c.d_in}, DType::f64, rng);
  const Tensor w = randn({c.E, c.d_out, c.d_in}, DType::f64, rng);
  const Tensor gates = make_gates(mask, rng, "gates");
  const Tensor y = ops::combine(ops::grouped_matmul(ops::gather_rows(x, p), w, p), gates, p);

  const std::vector<int32_t> m = mask.to_vector<int32_t>();
  const std::vector<double> xv = values(x), wv = values(w), g = values(gates);
  std::vector<double> expected(size_t(c.T * c.d_out), 0.0);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.E; ++e) {
      if (!m[size_t(t * c.E + e)]) continue;
      for (int64_t j = 0; j < c.d_out; ++j) {
        double xw = 0;
        for (int64_t k = 0; k < c.d_in; ++k)
          xw += xv[size_t(t * c.d_in + k)] * wv[size_t((e * c.d_out + j) * c.d_in + k)];
        expected[size_t(t * c.d_out + j)] += g[size_t(t * c.E + e)] * xw;
      }
    }
  EXPECT_TRUE(all_close(values(y), expected, 1e-12, 1e-12));
}

TEST_P(DispatchComposition, GradCheck) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 53);
  const ops::Permutation p = ops::permute(mask);
  Rng rng(54);
  const Tensor x = param({c.T, c.d_in}, rng, "x");
  const Tensor w = param({c.E, c.d_out, c.d_in}, rng, "w");
  const Tensor gates = make_gates(mask, rng, "gates");
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) {
        return ops::combine(ops::grouped_matmul(ops::gather_rows(in[0], p), in[1], p), in[2], p);
      },
      {x, w, gates});
}

INSTANTIATE_TEST_SUITE_P(Masks, DispatchComposition, ::testing::ValuesIn(dispatch_cases()),
                         case_name);

TEST(DispatchComposition, AllZeroMaskGivesZerosAndZeroGrads) {
  const Tensor mask = Tensor::zeros({4, 3}, DType::i32);
  const ops::Permutation p = ops::permute(mask);
  ASSERT_EQ(p.n_rows, 0);
  Rng rng(55);
  const Tensor x = param({4, 5}, rng, "x");
  const Tensor w = param({3, 2, 5}, rng, "w");
  const Tensor gates = param({4, 3}, rng, "gates");
  const Tensor routed = ops::gather_rows(x, p);
  EXPECT_EQ(routed.shape(), (Shape{0, 5}));
  const Tensor expert_out = ops::grouped_matmul(routed, w, p);
  EXPECT_EQ(expert_out.shape(), (Shape{0, 2}));
  const Tensor y = ops::combine(expert_out, gates, p);
  EXPECT_EQ(y.shape(), (Shape{4, 2}));
  EXPECT_EQ(values(y), std::vector<double>(8, 0.0));
  backward(y, randn({4, 2}, DType::f64, rng));
  ASSERT_TRUE(x.grad().defined() && w.grad().defined() && gates.grad().defined());
  EXPECT_EQ(values(x.grad()), std::vector<double>(20, 0.0));
  EXPECT_EQ(values(w.grad()), std::vector<double>(30, 0.0));
  EXPECT_EQ(values(gates.grad()), std::vector<double>(12, 0.0));
}

TEST(Combine, ShapeErrorsNameOpAndShapes) {
  const ops::Permutation p = ops::permute(Tensor::from_vector<int32_t>({3, 2}, {1, 0, 1, 1, 0, 1}));
  const Tensor out = Tensor::zeros({4, 5}, DType::f32), gates = Tensor::zeros({3, 2}, DType::f32);
  std::string msg = error_of([&] { ops::combine(out, Tensor::zeros({3, 3}, DType::f32), p); });
  EXPECT_NE(msg.find("combine: gates (3, 3) must match perm.row_of (3, 2)"), std::string::npos)
      << msg;
  msg = error_of([&] { ops::combine(Tensor::zeros({5, 5}, DType::f32), gates, p); });
  EXPECT_NE(msg.find("expert_out (5, 5) has 5 at dim 0, expected 4"), std::string::npos) << msg;
  msg = error_of([&] { ops::combine(Tensor::zeros({20}, DType::f32), gates, p); });
  EXPECT_NE(msg.find("expert_out must be 2-D"), std::string::npos) << msg;
  msg = error_of([&] { ops::combine(out, Tensor::zeros({3, 2}, DType::f64), p); });
  EXPECT_NE(msg.find("dtypes differ"), std::string::npos) << msg;
}

TEST(Combine, RowOfOutsideTheRowsIsAnError) {
  ops::Permutation p = ops::permute(Tensor::from_vector<int32_t>({2, 2}, {1, 0, 0, 1}));
  p.row_of = Tensor::from_vector<int32_t>({2, 2}, {0, -1, -1, 2});
  const std::string msg = error_of([&] {
    ops::combine(Tensor::zeros({2, 3}, DType::f64), Tensor::zeros({2, 2}, DType::f64), p);
  });
  EXPECT_NE(msg.find("perm.row_of[1, 1] = 2 is outside [-1, 2)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
