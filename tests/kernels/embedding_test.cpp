#include "autodiff/ops.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

Tensor ids_of(const std::vector<int32_t>& ids) {
  return Tensor::from_vector<int32_t>({int64_t(ids.size())}, ids);
}

// Random ids in [0, V), the first two equal so every case with T ≥ 2 has a repeat.
std::vector<int32_t> random_ids(int64_t n_tokens, int64_t vocab, Rng& rng) {
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < n_tokens; ++t) ids.push_back(int32_t(rng.below(vocab)));
  if (n_tokens >= 2) ids[1] = ids[0];
  return ids;
}

struct EmbeddingCase {
  int64_t n_tokens, vocab, dim;
};

class EmbeddingTest : public ::testing::TestWithParam<EmbeddingCase> {};

TEST_P(EmbeddingTest, ForwardCopiesRows) {
  const EmbeddingCase c = GetParam();
  Rng rng(1);
  const std::vector<int32_t> ids = random_ids(c.n_tokens, c.vocab, rng);
  const Tensor table = randn({c.vocab, c.dim}, DType::f64, rng);
  const Tensor out = ops::embedding(ids_of(ids), table);
  ASSERT_EQ(out.shape(), (Shape{c.n_tokens, c.dim}));
  const std::vector<double> tab = values(table);
  std::vector<double> expected;
  for (int32_t id : ids)
    for (int64_t j = 0; j < c.dim; ++j) expected.push_back(tab[size_t(id * c.dim + j)]);
  EXPECT_TRUE(all_close(values(out), expected, 0, 0));
}

TEST_P(EmbeddingTest, GradCheckOverTable) {
  const EmbeddingCase c = GetParam();
  Rng rng(2);
  const Tensor ids = ids_of(random_ids(c.n_tokens, c.vocab, rng));
  const Tensor table = param({c.vocab, c.dim}, rng, "table");
  expect_gradcheck([&](const std::vector<Tensor>& in) { return ops::embedding(ids, in[0]); },
                   {table});
}

TEST_P(EmbeddingTest, Float32AgreesWithFloat64) {
  const EmbeddingCase c = GetParam();
  Rng rng(3);
  const Tensor ids = ids_of(random_ids(c.n_tokens, c.vocab, rng));
  const Tensor table = randn({c.vocab, c.dim}, DType::f64, rng);
  EXPECT_TRUE(all_close(ops::embedding(ids, ops::cast(table, DType::f32)),
                        ops::embedding(ids, table), 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingTest,
                         ::testing::Values(EmbeddingCase{1, 1, 1}, EmbeddingCase{1, 5, 3},
                                           EmbeddingCase{7, 5, 3}, EmbeddingCase{13, 7, 4},
                                           EmbeddingCase{3, 13, 5}));

TEST(Embedding, RepeatedIdsAccumulateAndUnusedRowsGetZero) {
  // V = 5, d = 2; row 1 is used three times, row 3 once, rows 0, 2, 4 never.
  const Tensor ids = ids_of({1, 3, 1, 1});
  Tensor table = Tensor::zeros({5, 2}, DType::f64);
  table.set_requires_grad(true);
  const Tensor out = ops::embedding(ids, table);
  const Tensor seed =
      Tensor::from_vector<double>({4, 2}, {1, 10, 2, 20, 3, 30, 4, 40});
  backward(out, seed);
  ASSERT_TRUE(table.grad().defined());
  EXPECT_TRUE(all_close(values(table.grad()), {0, 0, 8, 80, 0, 0, 2, 20, 0, 0}, 0, 0));
}

TEST(Embedding, TwoLookupsOfOneTableAddTheirGradients) {
  Tensor table = Tensor::zeros({3, 1}, DType::f64);
  table.set_requires_grad(true);
  const Tensor y = ops::add(ops::embedding(ids_of({0, 2}), table),
                            ops::embedding(ids_of({2, 2}), table));
  backward(y, Tensor::from_vector<double>({2, 1}, {1, 2}));
  EXPECT_TRUE(all_close(values(table.grad()), {1, 0, 2 + 1 + 2}, 0, 0));
}

TEST(Embedding, IdOutOfRangeNamesIdPositionAndVocab) {
  const Tensor table = Tensor::zeros({7, 3}, DType::f32);
  std::string msg = error_of([&] { ops::embedding(ids_of({0, 6, 7, 1}), table); });
  EXPECT_NE(msg.find("embedding"), std::string::npos) << msg;
  EXPECT_NE(msg.find("id 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("position 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[0, 7)"), std::string::npos) << msg;
  msg = error_of([&] { ops::embedding(ids_of({-1}), table); });
  EXPECT_NE(msg.find("id -1 at position 0"), std::string::npos) << msg;
}

TEST(Embedding, BadDtypesAndShapesAreErrors) {
  const Tensor table = Tensor::zeros({7, 3}, DType::f32);
  const Tensor float_ids = Tensor::zeros({2}, DType::f32);
  std::string msg = error_of([&] { ops::embedding(float_ids, table); });
  EXPECT_NE(msg.find("ids must be i32"), std::string::npos) << msg;
  msg = error_of([&] { ops::embedding(Tensor::zeros({2, 2}, DType::i32), table); });
  EXPECT_NE(msg.find("ids must be 1-D"), std::string::npos) << msg;
  msg = error_of([&] { ops::embedding(ids_of({0}), Tensor::zeros({7}, DType::f32)); });
  EXPECT_NE(msg.find("table must be 2-D"), std::string::npos) << msg;
  msg = error_of([&] { ops::embedding(ids_of({0}), Tensor::zeros({7, 3}, DType::i32)); });
  EXPECT_NE(msg.find("i32 is not supported"), std::string::npos) << msg;
}

}  // namespace
}  // namespace remoe::test
