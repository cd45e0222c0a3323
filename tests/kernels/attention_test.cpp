#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/attention.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

struct AttnCase {
  int64_t B, S, Hq, Hkv, Dh;
};

std::ostream& operator<<(std::ostream& os, const AttnCase& c) {
  return os << "B" << c.B << "_S" << c.S << "_Hq" << c.Hq << "_Hkv" << c.Hkv << "_Dh" << c.Dh;
}

Shape q_shape(const AttnCase& c) { return {c.B, c.S, c.Hq, c.Dh}; }
Shape kv_shape(const AttnCase& c) { return {c.B, c.S, c.Hkv, c.Dh}; }

// The textbook form, written independently of the kernel: for each (b, h) the full S × S
// score matrix with −∞ above the diagonal, a row softmax, then P · V. Also returns the lse.
struct Naive {
  std::vector<double> out, lse;
};

Naive naive_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t B = q.dim(0), S = q.dim(1), Hq = q.dim(2), Hkv = k.dim(2), Dh = q.dim(3);
  const auto Q = values(q), K = values(k), V = values(v);
  auto qi = [&](int64_t b, int64_t s, int64_t h, int64_t d) { return ((b * S + s) * Hq + h) * Dh + d; };
  auto ki = [&](int64_t b, int64_t s, int64_t h, int64_t d) { return ((b * S + s) * Hkv + h) * Dh + d; };
  Naive r{std::vector<double>(size_t(B * S * Hq * Dh)), std::vector<double>(size_t(B * Hq * S))};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t g = h / (Hq / Hkv);
      std::vector<std::vector<double>> scores(static_cast<size_t>(S), std::vector<double>(static_cast<size_t>(S)));
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < Dh; ++d) dot += Q[size_t(qi(b, i, h, d))] * K[size_t(ki(b, j, g, d))];
          scores[size_t(i)][size_t(j)] =
              j <= i ? dot / std::sqrt(double(Dh)) : -std::numeric_limits<double>::infinity();
        }
      for (int64_t i = 0; i < S; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < S; ++j) sum += std::exp(scores[size_t(i)][size_t(j)]);
        r.lse[size_t((b * Hq + h) * S + i)] = std::log(sum);
        for (int64_t d = 0; d < Dh; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < S; ++j)
            acc += std::exp(scores[size_t(i)][size_t(j)]) / sum * V[size_t(ki(b, j, g, d))];
          r.out[size_t(qi(b, i, h, d))] = acc;
        }
      }
    }
  return r;
}

// lse straight from the kernel (the op keeps it internal).
template <typename T>
std::vector<double> kernel_lse(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t B = q.dim(0), S = q.dim(1), Hq = q.dim(2), Hkv = k.dim(2), Dh = q.dim(3);
  Tensor out = Tensor::empty(q.shape(), q.dtype()), lse = Tensor::empty({B, Hq, S}, q.dtype());
  cpu::attention_forward(out.data<T>(), lse.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), B,
                         S, Hq, Hkv, Dh);
  return values(lse);
}

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, ForwardMatchesNaiveSoftmax) {
  const AttnCase c = GetParam();
  Rng rng(1);
  const Tensor q = randn(q_shape(c), DType::f64, rng), k = randn(kv_shape(c), DType::f64, rng),
               v = randn(kv_shape(c), DType::f64, rng);
  const Tensor y = ops::attention(q, k, v);
  ASSERT_EQ(y.shape(), q_shape(c));
  const Naive ref = naive_attention(q, k, v);
  EXPECT_TRUE(all_close(values(y), ref.out, 1e-12, 1e-12));
  EXPECT_TRUE(all_close(kernel_lse<double>(q, k, v), ref.lse, 1e-12, 1e-12));
}

TEST_P(AttentionTest, FirstPositionReturnsItsKvHeadsFirstValue) {
  const AttnCase c = GetParam();
  Rng rng(2);
  const Tensor q = randn(q_shape(c), DType::f32, rng), k = randn(kv_shape(c), DType::f32, rng),
               v = randn(kv_shape(c), DType::f32, rng);
  const auto y = ops::attention(q, k, v).to_vector<float>();
  const auto V = v.to_vector<float>();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t d = 0; d < c.Dh; ++d)
        ASSERT_EQ(y[size_t(((b * c.S) * c.Hq + h) * c.Dh + d)],
                  V[size_t(((b * c.S) * c.Hkv + h / (c.Hq / c.Hkv)) * c.Dh + d)])
            << "b " << b << " h " << h << " d " << d;
}

// q, k and v all require grad. With S = 1 the output is v whatever q and k are, so their
// gradients are exactly zero; there the check asserts that instead of a nonzero numeric norm.
TEST_P(AttentionTest, GradCheck) {
  const AttnCase c = GetParam();
  Rng rng(3);
  const Tensor q = param(q_shape(c), rng, "q"), k = param(kv_shape(c), rng, "k"),
               v = param(kv_shape(c), rng, "v");
  const auto results = gradcheck(
      [](const std::vector<Tensor>& in) { return ops::attention(in[0], in[1], in[2]); }, {q, k, v});
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    EXPECT_LT(r.rel_error, kGradTol) << report(results);
    if (c.S == 1 && r.input != "v") {
      EXPECT_EQ(r.analytic_norm, 0.0) << report(results);
      EXPECT_EQ(r.numeric_norm, 0.0) << report(results);
    } else {
      EXPECT_GT(r.numeric_norm, 0.0) << r.input << ": vacuous check\n" << report(results);
    }
  }
}

TEST_P(AttentionTest, Float32AgreesWithFloat64) {
  const AttnCase c = GetParam();
  Rng rng(4);
  Tensor q = randn(q_shape(c), DType::f64, rng), k = randn(kv_shape(c), DType::f64, rng),
         v = randn(kv_shape(c), DType::f64, rng);
  const Tensor seed = randn(q_shape(c), DType::f64, rng);
  Tensor q32 = ops::cast(q, DType::f32), k32 = ops::cast(k, DType::f32),
         v32 = ops::cast(v, DType::f32);
  for (Tensor* t : {&q, &k, &v, &q32, &k32, &v32}) t->set_requires_grad(true);

  const Tensor y64 = ops::attention(q, k, v);
  backward(y64, seed);
  const Tensor y32 = ops::attention(q32, k32, v32);
  backward(y32, ops::cast(seed, DType::f32));

  EXPECT_TRUE(all_close(y32, y64, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(kernel_lse<float>(q32, k32, v32), kernel_lse<double>(q, k, v), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(q32.grad(), q.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(k32.grad(), k.grad(), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(v32.grad(), v.grad(), 1e-5, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttnCase{1, 1, 1, 1, 4},   // one token
                                           AttnCase{2, 1, 4, 2, 3},   // one token, GQA, B = 2
                                           AttnCase{2, 3, 2, 2, 4},   // MHA, B = 2
                                           AttnCase{1, 5, 3, 1, 5},   // MQA
                                           AttnCase{1, 4, 6, 2, 3},   // groups of 3
                                           AttnCase{2, 7, 4, 2, 5},   // S = 7
                                           AttnCase{1, 6, 2, 1, 1}),  // Dh = 1
                         [](const auto& info) {
                           std::ostringstream os;
                           os << info.param;
                           return os.str();
                         });

// Hq = 4 over Hkv = 2 is MHA with each kv head repeated twice, forward and backward (the
// repeated heads' gradients sum to the shared head's).
TEST(Attention, GroupedQueryEqualsMhaWithRepeatedKvHeads) {
  const int64_t B = 2, S = 5, Hq = 4, Hkv = 2, Dh = 3;
  Rng rng(5);
  Tensor q = randn({B, S, Hq, Dh}, DType::f64, rng), k = randn({B, S, Hkv, Dh}, DType::f64, rng),
         v = randn({B, S, Hkv, Dh}, DType::f64, rng);
  const Tensor seed = randn({B, S, Hq, Dh}, DType::f64, rng);
  auto repeat = [&](const Tensor& t) {
    const auto x = values(t);
    std::vector<double> r(size_t(B * S * Hq * Dh));
    for (int64_t bs = 0; bs < B * S; ++bs)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t d = 0; d < Dh; ++d)
          r[size_t((bs * Hq + h) * Dh + d)] = x[size_t((bs * Hkv + h / 2) * Dh + d)];
    return Tensor::from_vector<double>({B, S, Hq, Dh}, r);
  };
  Tensor k_rep = repeat(k), v_rep = repeat(v), q_mha = q.clone();
  for (Tensor* t : {&q, &k, &v, &q_mha, &k_rep, &v_rep}) t->set_requires_grad(true);

  const Tensor y = ops::attention(q, k, v);
  backward(y, seed);
  const Tensor y_mha = ops::attention(q_mha, k_rep, v_rep);
  backward(y_mha, seed);

  EXPECT_TRUE(all_close(y, y_mha, 1e-12, 1e-12));
  EXPECT_TRUE(all_close(q.grad(), q_mha.grad(), 1e-12, 1e-12));
  auto fold = [&](const Tensor& g) {  // sum each pair of repeated heads back into one
    const auto x = values(g);
    std::vector<double> r(size_t(B * S * Hkv * Dh), 0.0);
    for (int64_t bs = 0; bs < B * S; ++bs)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t d = 0; d < Dh; ++d)
          r[size_t((bs * Hkv + h / 2) * Dh + d)] += x[size_t((bs * Hq + h) * Dh + d)];
    return r;
  };
  EXPECT_TRUE(all_close(values(k.grad()), fold(k_rep.grad()), 1e-12, 1e-12));
  EXPECT_TRUE(all_close(values(v.grad()), fold(v_rep.grad()), 1e-12, 1e-12));
}

// Scores around ±1000 overflow a naive exp; the max-shifted softmax keeps every output a
// convex combination of the visible values and the lse finite.
TEST(Attention, LargeScoresStayFinite) {
  const int64_t S = 4, Dh = 4;
  Rng rng(6);
  const Tensor q = randn({1, S, 1, Dh}, DType::f32, rng, 500.0),
               k = randn({1, S, 1, Dh}, DType::f32, rng, 1.0),
               v = randn({1, S, 1, Dh}, DType::f32, rng);
  const auto y = values(ops::attention(q, k, v));
  const auto V = values(v);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t d = 0; d < Dh; ++d) {
      double lo = V[size_t(d)], hi = V[size_t(d)];
      for (int64_t j = 0; j <= s; ++j) {
        lo = std::min(lo, V[size_t(j * Dh + d)]);
        hi = std::max(hi, V[size_t(j * Dh + d)]);
      }
      const double x = y[size_t(s * Dh + d)];
      EXPECT_TRUE(std::isfinite(x) && x >= lo - 1e-6 && x <= hi + 1e-6) << s << " " << d << ": " << x;
    }
  for (double l : kernel_lse<float>(q, k, v)) EXPECT_TRUE(std::isfinite(l)) << l;
}

TEST(Attention, OnlyInputsThatRequireGradGetOne) {
  Rng rng(7);
  Tensor q = randn({1, 3, 2, 2}, DType::f64, rng), k = randn({1, 3, 1, 2}, DType::f64, rng),
         v = randn({1, 3, 1, 2}, DType::f64, rng);
  k.set_requires_grad(true);
  backward(ops::attention(q, k, v), randn({1, 3, 2, 2}, DType::f64, rng));
  EXPECT_TRUE(k.grad().defined());
  EXPECT_FALSE(q.grad().defined());
  EXPECT_FALSE(v.grad().defined());
}

std::string attention_error(const Shape& qs, const Shape& ks, const Shape& vs,
                            DType dq = DType::f32, DType dkv = DType::f32) {
  const Tensor q = Tensor::zeros(qs, dq), k = Tensor::zeros(ks, dkv), v = Tensor::zeros(vs, dkv);
  return error_of([&] { ops::attention(q, k, v); });
}

void expect_names_all(const std::string& msg, const std::vector<std::string>& parts) {
  EXPECT_NE(msg.find("attention"), std::string::npos) << msg;
  for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << p << " in: " << msg;
}

TEST(Attention, ShapeMismatchesNameOpAndAllShapes) {
  // k and v differ
  expect_names_all(attention_error({1, 3, 2, 4}, {1, 3, 2, 4}, {1, 3, 1, 4}),
                   {"(1, 3, 2, 4)", "(1, 3, 1, 4)", "same shape"});
  // batch, seq and head_dim must agree between q and k/v
  expect_names_all(attention_error({2, 3, 2, 4}, {1, 3, 2, 4}, {1, 3, 2, 4}),
                   {"(2, 3, 2, 4)", "(1, 3, 2, 4)"});
  expect_names_all(attention_error({1, 3, 2, 4}, {1, 5, 2, 4}, {1, 5, 2, 4}),
                   {"(1, 3, 2, 4)", "(1, 5, 2, 4)"});
  expect_names_all(attention_error({1, 3, 2, 4}, {1, 3, 2, 5}, {1, 3, 2, 5}),
                   {"(1, 3, 2, 4)", "(1, 3, 2, 5)"});
  // query heads not a multiple of kv heads
  expect_names_all(attention_error({1, 3, 3, 4}, {1, 3, 2, 4}, {1, 3, 2, 4}),
                   {"(1, 3, 3, 4)", "(1, 3, 2, 4)", "multiple"});
  // zero kv heads must be an error, not a division by zero
  expect_names_all(attention_error({1, 3, 2, 4}, {1, 3, 0, 4}, {1, 3, 0, 4}),
                   {"(1, 3, 2, 4)", "(1, 3, 0, 4)", "positive"});
  // wrong rank
  expect_names_all(attention_error({3, 2, 4}, {1, 3, 2, 4}, {1, 3, 2, 4}),
                   {"4-D", "(3, 2, 4)", "(1, 3, 2, 4)"});
}

TEST(Attention, DtypeErrors) {
  EXPECT_NE(attention_error({1, 2, 1, 2}, {1, 2, 1, 2}, {1, 2, 1, 2}, DType::f64, DType::f32)
                .find("dtypes differ"),
            std::string::npos);
  EXPECT_NE(attention_error({1, 2, 1, 2}, {1, 2, 1, 2}, {1, 2, 1, 2}, DType::i32, DType::i32)
                .find("i32"),
            std::string::npos);
}

}  // namespace
}  // namespace remoe::test
