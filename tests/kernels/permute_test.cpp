#include "tests/kernels/dispatch_masks.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

using I = std::vector<int32_t>;

Tensor mask_of(int64_t T, int64_t E, const I& values) {
  return Tensor::from_vector<int32_t>({T, E}, values);
}

void expect_permutation(const ops::Permutation& p, const I& offsets, const I& token_index,
                        const I& row_of) {
  EXPECT_EQ(p.n_rows, int64_t(token_index.size()));
  EXPECT_EQ(p.expert_offsets.shape(), (Shape{int64_t(offsets.size())}));
  EXPECT_EQ(p.token_index.shape(), (Shape{int64_t(token_index.size())}));
  EXPECT_EQ(p.expert_offsets.to_vector<int32_t>(), offsets);
  EXPECT_EQ(p.token_index.to_vector<int32_t>(), token_index);
  EXPECT_EQ(p.row_of.to_vector<int32_t>(), row_of);
}

// --- permute ------------------------------------------------------------------------------

TEST(Permute, HandMadeMask) {
  // Expert 1 is empty, token 3 goes nowhere, token 0 goes to two experts.
  const ops::Permutation p = ops::permute(mask_of(4, 3, {1, 0, 1,  //
                                                         0, 0, 1,  //
                                                         1, 0, 0,  //
                                                         0, 0, 0}));
  EXPECT_EQ(p.row_of.shape(), (Shape{4, 3}));
  expect_permutation(p, {0, 2, 2, 4}, {0, 2, 0, 1},
                     {0, -1, 2,  //
                      -1, -1, 3,  //
                      1, -1, -1,  //
                      -1, -1, -1});
}

TEST(Permute, EveryTokenOnOneExpert) {
  expect_permutation(ops::permute(mask_of(5, 3, {0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0})),
                     {0, 0, 5, 5}, {0, 1, 2, 3, 4},
                     {-1, 0, -1, -1, 1, -1, -1, 2, -1, -1, 3, -1, -1, 4, -1});
}

TEST(Permute, SingleExpert) {
  expect_permutation(ops::permute(mask_of(4, 1, {1, 0, 1, 1})), {0, 3}, {0, 2, 3},
                     {0, -1, 1, 2});
}

TEST(Permute, SingleToken) {
  expect_permutation(ops::permute(mask_of(1, 4, {0, 1, 1, 0})), {0, 0, 1, 2, 2}, {0, 0},
                     {-1, 0, 1, -1});
}

TEST(Permute, DenseMaskIsExpertMajorTokenMinor) {
  expect_permutation(ops::permute(mask_of(3, 2, {1, 1, 1, 1, 1, 1})), {0, 3, 6},
                     {0, 1, 2, 0, 1, 2}, {0, 3, 1, 4, 2, 5});
}

TEST(Permute, AllZeroMaskHasNoRows) {
  const ops::Permutation p = ops::permute(mask_of(3, 4, I(12, 0)));
  expect_permutation(p, {0, 0, 0, 0, 0}, {}, I(12, -1));
  EXPECT_EQ(p.token_index.shape(), (Shape{0}));
}

TEST(Permute, NoTokens) {
  const ops::Permutation p = ops::permute(Tensor::zeros({0, 3}, DType::i32));
  expect_permutation(p, {0, 0, 0, 0}, {}, {});
  EXPECT_EQ(p.row_of.shape(), (Shape{0, 3}));
}

// On random masks of every edge kind: compared with per-expert lists built expert by expert,
// which also shows stability (tokens ascending inside an expert).
class PermuteCases : public ::testing::TestWithParam<DispatchCase> {};

TEST_P(PermuteCases, MatchesPerExpertListsAndIsStable) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 11);
  const I m = mask.to_vector<int32_t>();
  I offsets{0}, tokens, row_of(m.size(), -1);
  for (int64_t e = 0; e < c.E; ++e) {
    for (int64_t t = 0; t < c.T; ++t)
      if (m[size_t(t * c.E + e)]) {
        row_of[size_t(t * c.E + e)] = int32_t(tokens.size());
        tokens.push_back(int32_t(t));
      }
    offsets.push_back(int32_t(tokens.size()));
  }
  const ops::Permutation p = ops::permute(mask);
  expect_permutation(p, offsets, tokens, row_of);
  const I got = p.token_index.to_vector<int32_t>();
  for (int64_t e = 0; e < c.E; ++e)
    for (int32_t r = offsets[size_t(e)] + 1; r < offsets[size_t(e + 1)]; ++r)
      EXPECT_LT(got[size_t(r - 1)], got[size_t(r)]) << "expert " << e << ", row " << r;
}

TEST(Permute, LargeRandomMaskRowsRoundTrip) {
  const DispatchCase c{97, 11, 1, 1, MaskKind::kRandom};
  const Tensor mask = make_mask(c, 5);
  const ops::Permutation p = ops::permute(mask);
  const I m = mask.to_vector<int32_t>(), tok = p.token_index.to_vector<int32_t>(),
          off = p.expert_offsets.to_vector<int32_t>(), row_of = p.row_of.to_vector<int32_t>();
  int64_t active = 0;
  for (int32_t v : m) active += v;
  ASSERT_EQ(p.n_rows, active);
  for (int64_t e = 0; e < c.E; ++e)
    for (int32_t r = off[size_t(e)]; r < off[size_t(e + 1)]; ++r) {
      EXPECT_EQ(row_of[size_t(tok[size_t(r)] * c.E + e)], r);
      if (r > off[size_t(e)]) {
        EXPECT_LT(tok[size_t(r - 1)], tok[size_t(r)]);
      }
    }
}

TEST(Permute, MaskValuesOtherThanZeroOrOneAreErrors) {
  const std::string msg = error_of([] { ops::permute(mask_of(2, 2, {1, 0, 2, 1})); });
  EXPECT_NE(msg.find("permute"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0 or 1, got 2 at (1, 0)"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { ops::permute(mask_of(1, 2, {0, -1})); }).find("got -1"),
            std::string::npos);
}

TEST(Permute, MaskMustBe2DInt32) {
  EXPECT_NE(error_of([] { ops::permute(Tensor::zeros({2, 3}, DType::f32)); }).find("must be i32"),
            std::string::npos);
  EXPECT_NE(error_of([] { ops::permute(Tensor::zeros({6}, DType::i32)); }).find("must be 2-D"),
            std::string::npos);
  EXPECT_NE(error_of([] { ops::permute(Tensor()); }).find("undefined"), std::string::npos);
}

// --- gather_rows ----------------------------------------------------------------------------

class GatherRowsCases : public ::testing::TestWithParam<DispatchCase> {};

TEST_P(GatherRowsCases, ForwardCopiesTokenRows) {
  const DispatchCase c = GetParam();
  const ops::Permutation p = ops::permute(make_mask(c, 21));
  Rng rng(22);
  const Tensor x = randn({c.T, c.d_in}, DType::f64, rng);
  const Tensor out = ops::gather_rows(x, p);
  ASSERT_EQ(out.shape(), (Shape{p.n_rows, c.d_in}));
  const I tok = p.token_index.to_vector<int32_t>();
  const std::vector<double> xv = values(x), ov = values(out);
  for (int64_t r = 0; r < p.n_rows; ++r)
    for (int64_t j = 0; j < c.d_in; ++j)
      EXPECT_EQ(ov[size_t(r * c.d_in + j)], xv[size_t(tok[size_t(r)] * c.d_in + j)]);
}

TEST_P(GatherRowsCases, BackwardSumsRowsPerToken) {
  const DispatchCase c = GetParam();
  const Tensor mask = make_mask(c, 23);
  const ops::Permutation p = ops::permute(mask);
  Rng rng(24);
  const Tensor x = param({c.T, c.d_in}, rng, "x");
  const Tensor out = ops::gather_rows(x, p);
  const Tensor seed = randn(out.shape(), DType::f64, rng);
  backward(out, seed);
  ASSERT_TRUE(x.grad().defined());
  const I m = mask.to_vector<int32_t>(), row_of = p.row_of.to_vector<int32_t>();
  const std::vector<double> s = values(seed);
  std::vector<double> expected(size_t(c.T * c.d_in), 0.0);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t e = 0; e < c.E; ++e)
      if (m[size_t(t * c.E + e)])
        for (int64_t j = 0; j < c.d_in; ++j)
          expected[size_t(t * c.d_in + j)] += s[size_t(row_of[size_t(t * c.E + e)] * c.d_in + j)];
  EXPECT_TRUE(all_close(values(x.grad()), expected, 1e-12, 1e-12));
}

TEST_P(GatherRowsCases, GradCheck) {
  const DispatchCase c = GetParam();
  const ops::Permutation p = ops::permute(make_mask(c, 25));
  Rng rng(26);
  const Tensor x = param({c.T, c.d_in}, rng, "x");
  expect_gradcheck([&](const std::vector<Tensor>& in) { return ops::gather_rows(in[0], p); }, {x});
}

TEST_P(GatherRowsCases, Float32AgreesWithFloat64) {
  const DispatchCase c = GetParam();
  const ops::Permutation p = ops::permute(make_mask(c, 27));
  Rng rng(28);
  const Tensor x = randn({c.T, c.d_in}, DType::f64, rng);
  EXPECT_TRUE(all_close(ops::gather_rows(ops::cast(x, DType::f32), p), ops::gather_rows(x, p),
                        1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Masks, PermuteCases, ::testing::ValuesIn(dispatch_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Masks, GatherRowsCases, ::testing::ValuesIn(dispatch_cases()), case_name);

TEST(GatherRows, NoRoutedRowsGivesEmptyOutputAndZeroGrad) {
  const ops::Permutation p = ops::permute(mask_of(3, 2, I(6, 0)));
  Rng rng(29);
  const Tensor x = param({3, 4}, rng, "x");
  const Tensor out = ops::gather_rows(x, p);
  EXPECT_EQ(out.shape(), (Shape{0, 4}));
  backward(out, Tensor::zeros({0, 4}, DType::f64));
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(values(x.grad()), std::vector<double>(12, 0.0));
}

TEST(GatherRows, ShapeErrorsNameOpAndShapes) {
  const ops::Permutation p = ops::permute(mask_of(3, 2, {1, 0, 1, 1, 0, 1}));
  std::string msg = error_of([&] { ops::gather_rows(Tensor::zeros({4, 5}, DType::f32), p); });
  EXPECT_NE(msg.find("gather_rows"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 5)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 3"), std::string::npos) << msg;
  msg = error_of([&] { ops::gather_rows(Tensor::zeros({3}, DType::f32), p); });
  EXPECT_NE(msg.find("must be 2-D"), std::string::npos) << msg;
  msg = error_of([&] { ops::gather_rows(Tensor::zeros({3, 2}, DType::i32), p); });
  EXPECT_NE(msg.find("gather_rows: dtype i32"), std::string::npos) << msg;
}

TEST(GatherRows, InconsistentPermutationIsAnError) {
  ops::Permutation p = ops::permute(mask_of(3, 2, {1, 0, 1, 1, 0, 1}));
  const Tensor x = Tensor::zeros({3, 2}, DType::f64);
  ops::Permutation wrong_n = p;
  wrong_n.n_rows = 3;
  EXPECT_NE(error_of([&] { ops::gather_rows(x, wrong_n); }).find("perm.n_rows"), std::string::npos);
  ops::Permutation bad_token = p;
  bad_token.token_index = Tensor::from_vector<int32_t>({4}, {0, 1, 7, 2});
  const std::string msg = error_of([&] { ops::gather_rows(x, bad_token); });
  EXPECT_NE(msg.find("perm.token_index[2] = 7 is outside [0, 3)"), std::string::npos) << msg;
  ops::Permutation no_perm;
  EXPECT_NE(error_of([&] { ops::gather_rows(x, no_perm); }).find("undefined"), std::string::npos);
}

}  // namespace
}  // namespace remoe::test
