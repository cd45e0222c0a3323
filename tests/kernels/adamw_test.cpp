#include <cmath>

#include "tests/test_util.h"

namespace remoe::test {
namespace {

// An independent AdamW in double, written from the equations in kernels/adamw.h.
struct ReferenceAdamW {
  std::vector<double> p, m, v;
  void step(const std::vector<double>& g, const cpu::AdamWHyper& h, int t) {
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - h.lr * h.weight_decay;
      m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i];
      v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(h.beta1, t));
      const double v_hat = v[i] / (1 - std::pow(h.beta2, t));
      p[i] -= h.lr * m_hat / (std::sqrt(v_hat) + h.eps);
    }
  }
};

TEST(AdamW, FirstStepMovesEachWeightByLrTimesSignAfterDecay) {
  cpu::AdamWHyper h;
  h.lr = 0.1;
  h.weight_decay = 0.5;
  Tensor p = Tensor::from_vector<double>({3}, {1.0, -2.0, 0.5});
  p.set_requires_grad(true);
  p.set_grad(Tensor::from_vector<double>({3}, {0.3, -4.0, 1e-3}));
  const Tensor m = Tensor::zeros({3}, DType::f64), v = Tensor::zeros({3}, DType::f64);
  ops::adamw_step(p, m, v, h, 1);
  // Step 1: m̂ = g and v̂ = g², so the update is lr · g / (|g| + eps).
  const std::vector<double> expected = {1.0 * 0.95 - 0.1 * 0.3 / (0.3 + 1e-8),
                                        -2.0 * 0.95 + 0.1 * 4.0 / (4.0 + 1e-8),
                                        0.5 * 0.95 - 0.1 * 1e-3 / (1e-3 + 1e-8)};
  EXPECT_TRUE(all_close(values(p), expected, 1e-15, 1e-14));
  EXPECT_TRUE(all_close(values(m), {0.03, -0.4, 1e-4}, 1e-15, 1e-14));
  EXPECT_TRUE(all_close(values(v), {0.3 * 0.3 * 1e-3, 16e-3, 1e-9}, 1e-18, 1e-12));
}

TEST(AdamW, FollowsTheReferenceOverSeveralSteps) {
  cpu::AdamWHyper h;
  h.lr = 0.01;
  Rng rng(3);
  const int64_t n = 13;
  Tensor p = randn({n}, DType::f64, rng);
  p.set_requires_grad(true);
  const Tensor m = Tensor::zeros({n}, DType::f64), v = Tensor::zeros({n}, DType::f64);
  ReferenceAdamW ref{values(p), std::vector<double>(n, 0), std::vector<double>(n, 0)};
  for (int t = 1; t <= 5; ++t) {
    const Tensor g = randn({n}, DType::f64, rng);
    p.set_grad(g);
    ops::adamw_step(p, m, v, h, t);
    ref.step(values(g), h, t);
  }
  EXPECT_TRUE(all_close(values(p), ref.p, 1e-14, 1e-12));
  EXPECT_TRUE(all_close(values(v), ref.v, 1e-16, 1e-12));
}

TEST(AdamW, Float32TracksFloat64) {
  cpu::AdamWHyper h;
  Rng rng(4);
  const Tensor p64 = randn({9}, DType::f64, rng), g64 = randn({9}, DType::f64, rng);
  Tensor p32 = ops::cast(p64, DType::f32);
  Tensor q64 = p64.clone();
  p32.set_requires_grad(true).set_grad(ops::cast(g64, DType::f32));
  q64.set_requires_grad(true).set_grad(g64);
  ops::adamw_step(p32, Tensor::zeros({9}, DType::f32), Tensor::zeros({9}, DType::f32), h, 1);
  ops::adamw_step(q64, Tensor::zeros({9}, DType::f64), Tensor::zeros({9}, DType::f64), h, 1);
  EXPECT_TRUE(all_close(p32, q64, 1e-6, 1e-5));
}

TEST(AdamW, ErrorsNameTheParameter) {
  Tensor p = Tensor::zeros({2}, DType::f32);
  p.set_requires_grad(true).set_name("layers.0.w1");
  const Tensor m = Tensor::zeros({2}, DType::f32), v = Tensor::zeros({2}, DType::f32);
  const std::string msg = error_of([&] { ops::adamw_step(p, m, v, {}, 1); });
  EXPECT_NE(msg.find("layers.0.w1"), std::string::npos) << msg;
  p.set_grad(Tensor::zeros({2}, DType::f32));
  EXPECT_NE(error_of([&] { ops::adamw_step(p, Tensor::zeros({3}, DType::f32), v, {}, 1); }).find("moments"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ops::adamw_step(p, m, v, {}, 0); }).find("1-based"), std::string::npos);
}

// The list form: each parameter updated as alone, with weight decay only where its flag says.
TEST(AdamW, ListFormUpdatesEachParameterWithItsOwnDecay) {
  const cpu::AdamWHyper h{0.1, 0.9, 0.999, 1e-8, 0.5};
  Rng rng(5);
  std::vector<Tensor> ps, ms, vs, ref;
  for (int i = 0; i < 2; ++i) {
    Tensor p = randn({4}, DType::f64, rng);
    p.set_requires_grad(true).set_grad(randn({4}, DType::f64, rng));
    Tensor q = p.clone();
    q.set_requires_grad(true).set_grad(p.grad());
    ps.push_back(p);
    ref.push_back(q);
    ms.push_back(Tensor::zeros({4}, DType::f64));
    vs.push_back(Tensor::zeros({4}, DType::f64));
  }
  ops::adamw_step(ps, ms, vs, {true, false}, h, 1);
  cpu::AdamWHyper no_decay = h;
  no_decay.weight_decay = 0;
  ops::adamw_step(ref[0], Tensor::zeros({4}, DType::f64), Tensor::zeros({4}, DType::f64), h, 1);
  ops::adamw_step(ref[1], Tensor::zeros({4}, DType::f64), Tensor::zeros({4}, DType::f64), no_decay, 1);
  EXPECT_TRUE(all_close(ps[0], ref[0], 0, 0));
  EXPECT_TRUE(all_close(ps[1], ref[1], 0, 0));
  EXPECT_NE(error_of([&] { ops::adamw_step(ps, ms, vs, {true}, h, 2); }).find("1 decay flags"),
            std::string::npos);
}

}  // namespace
}  // namespace remoe::test
