// The bf16 policy (model/precision.h) on the CPU, where it is emulated: round-to-nearest-even
// to bf16's 8 significant bits, the same rounding on the gradient, the GEMM's operands and
// output rounded while everything else stays f32, and a whole model whose loss moves by a
// bf16-sized amount and no more.
#include <gtest/gtest.h>

#include "autodiff/tape.h"
#include "model/precision.h"
#include "model/transformer.h"
#include "tests/test_util.h"

namespace remoe::model {
namespace {

using test::all_close;
using test::values;

Tensor f32(const Shape& shape, const std::vector<float>& v) { return Tensor::from_vector<float>(shape, v); }

// bf16 keeps 8 significant bits: at 1 its step is 2^-7. Halfway cases go to the even mantissa.
TEST(Precision, RoundToBf16IsNearestEvenAndRoundsTheGradientToo) {
  const float h = 1.0f / 256;  // 2^-8, half a step at 1
  Tensor x = f32({5}, {1 + h, 1 + 3 * h, 1 + 1.5f * h, -3.0f, 1e-3f});
  x.set_requires_grad(true);
  const Tensor y = round_to_bf16(x);
  EXPECT_EQ(values(y), (std::vector<double>{1.0, 1.015625, 1.0078125, -3.0, 0.00099945068359375}));
  backward(y, f32({5}, {1 + h, 2.0f, 1 + 3 * h, 0.5f, 1.0f}));
  EXPECT_EQ(values(x.grad()), (std::vector<double>{1.0, 2.0, 1.015625, 0.5, 1.0}));
}

TEST(Precision, Bf16LinearRoundsItsOperandsAndItsOutput) {
  const float h = 1.0f / 256;
  const Tensor x = f32({1, 2}, {1 + h, 3.0f}), w = f32({1, 2}, {1.0f, 1 + h});
  // f32: (1 + h) + 3 (1 + h) = 4 + 4h; bf16: the operands round to 1 and 3, 1 and 1, so 4.
  EXPECT_EQ(values(linear(x, w, Precision::f32)), std::vector<double>{4 + 4.0 / 256});
  EXPECT_EQ(values(linear(x, w, Precision::bf16)), std::vector<double>{4.0});
  // Operands already bf16, an output between two bf16 values: 1 + 3 · 2.015625 = 7.046875 lies
  // halfway between 7.03125 and 7.0625 (step 2^-5 in [4, 8)), and goes to the even 7.0625.
  const Tensor x2 = f32({1, 2}, {1.0f, 3.0f}), w2 = f32({1, 2}, {1.0f, 2.015625f});
  EXPECT_EQ(values(linear(x2, w2, Precision::f32)), std::vector<double>{7.046875});
  EXPECT_EQ(values(linear(x2, w2, Precision::bf16)), std::vector<double>{7.0625});
}

TEST(Precision, Bf16ModelLossIsWithinBf16OfTheF32Loss) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.d_ffn = 64;
  c.ffn = FfnKind::moe;
  c.router = RouterKind::relu;
  c.n_experts = 8;
  c.top_k = 1;
  c.init_std = 0.02;
  Transformer ref(c, 5), low(c, 5);
  low.set_precision(Precision::bf16);
  std::vector<int32_t> ids(48);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 37 + 11) % 256);
  const Tensor in = Tensor::from_vector<int32_t>({48}, ids);
  const ForwardOutput a = ref.forward(in, 2, 24, 1e-2), b = low.forward(in, 2, 24, 1e-2);
  // Logits of order 0.1: bf16's relative step 2^-8 moves each by ~4e-4 at most per GEMM.
  EXPECT_TRUE(all_close(b.logits, a.logits, 2e-3, 2e-2));
  EXPECT_FALSE(all_close(b.logits, a.logits, 0.0, 0.0)) << "the bf16 policy changed nothing";
  // The router stays f32: on the same inputs it would route the same; here the inputs differ
  // only by rounding, so nearly every pair routes the same.
  ASSERT_EQ(a.layers.size(), b.layers.size());
  EXPECT_NEAR(b.layers[0].sparsity, a.layers[0].sparsity, 0.05);
}

}  // namespace
}  // namespace remoe::model
