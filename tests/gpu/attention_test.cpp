// CUDA flash-style attention against the CPU reference (the CPU accumulates in double): forward
// out and lse, backward dq, dk, dv from the forward's lse; the f32 kernels tightly, the bf16
// tensor-core kernels to bf16's precision. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <ostream>

#include "kernels/attention.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

struct AttnShape {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
};
void PrintTo(const AttnShape& s, std::ostream* os) {
  *os << "B" << s.batch << "_S" << s.seq << "_Hq" << s.q_heads << "_Hkv" << s.kv_heads << "_Dh" << s.head_dim;
}

using GpuAttention = GpuTestWithParam<AttnShape>;

// f32 exponentials and sums in another order (and D = rowsum(dO ⊙ O) instead of Σ P dP) against
// double: outputs are convex combinations of unit-scale values, gradients sums over up to
// seq · group terms.
constexpr double kOutAtol = 2e-5, kOutRtol = 1e-4;
constexpr double kGradAtol = 1e-4, kGradRtol = 1e-3;

TEST_P(GpuAttention, MatchesCpu) {
  const auto [batch, seq, q_heads, kv_heads, head_dim] = GetParam();
  const Shape q_shape{batch, seq, q_heads, head_dim}, kv_shape{batch, seq, kv_heads, head_dim};
  Rng rng{uint64_t(seq * 100 + q_heads * 10 + kv_heads + head_dim)};
  // q twice as large: peakier softmax rows than unit scores give.
  const Tensor q = randn(q_shape, DType::f32, rng, 2.0), k = randn(kv_shape, DType::f32, rng),
               v = randn(kv_shape, DType::f32, rng), dout = randn(q_shape, DType::f32, rng);

  Tensor out = cpu_empty(q_shape), lse = cpu_empty({batch, q_heads, seq});
  Tensor dq = cpu_empty(q_shape), dk = cpu_empty(kv_shape), dv = cpu_empty(kv_shape);
  cpu::attention_forward(out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(),
                         batch, seq, q_heads, kv_heads, head_dim);
  cpu::attention_backward(dq.data<float>(), dk.data<float>(), dv.data<float>(), dout.data<float>(), q.data<float>(),
                          k.data<float>(), v.data<float>(), out.data<float>(), lse.data<float>(), batch, seq,
                          q_heads, kv_heads, head_dim);

  const Tensor qd = on_gpu(q), kd = on_gpu(k), vd = on_gpu(v), doutd = on_gpu(dout);
  Tensor outd = gpu_empty<float>(q_shape), lsed = gpu_empty<float>({batch, q_heads, seq});
  cuda::attention_forward(dev<float>(outd), dev<float>(lsed), dev<float>(qd), dev<float>(kd), dev<float>(vd), batch,
                          seq, q_heads, kv_heads, head_dim, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(outd), out, kOutAtol, kOutRtol)) << "out";
  EXPECT_TRUE(all_close(on_cpu(lsed), lse, kOutAtol, kOutRtol)) << "lse";

  // The backward reads the CPU's out and lse, so it is compared alone.
  const Tensor out_cpu_d = on_gpu(out), lse_cpu_d = on_gpu(lse);
  Tensor dqd = gpu_empty<float>(q_shape), dkd = gpu_empty<float>(kv_shape), dvd = gpu_empty<float>(kv_shape);
  cuda::attention_backward(dev<float>(dqd), dev<float>(dkd), dev<float>(dvd), dev<float>(doutd), dev<float>(qd),
                           dev<float>(kd), dev<float>(vd), dev<float>(out_cpu_d), dev<float>(lse_cpu_d), batch, seq,
                           q_heads, kv_heads, head_dim, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(dqd), dq, kGradAtol, kGradRtol)) << "dq";
  EXPECT_TRUE(all_close(on_cpu(dkd), dk, kGradAtol, kGradRtol)) << "dk";
  EXPECT_TRUE(all_close(on_cpu(dvd), dv, kGradAtol, kGradRtol)) << "dv";

  // One gradient alone (the others null) gives the same bits; so does a second run.
  Tensor dk_only = gpu_empty<float>(kv_shape);
  cuda::attention_backward(nullptr, dev<float>(dk_only), nullptr, dev<float>(doutd), dev<float>(qd), dev<float>(kd),
                           dev<float>(vd), dev<float>(out_cpu_d), dev<float>(lse_cpu_d), batch, seq, q_heads,
                           kv_heads, head_dim, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(dk_only), on_cpu(dkd), 0, 0)) << "dk alone";
}

// seq 1; seq not a multiple of the 32-row tile; GQA ratios 1 and 4; head_dim 64 and 128, small
// and not a multiple of 32; several batches; many tiles.
INSTANTIATE_TEST_SUITE_P(Shapes, GpuAttention,
                         ::testing::Values(AttnShape{1, 1, 1, 1, 64}, AttnShape{2, 37, 4, 1, 64},
                                           AttnShape{1, 64, 2, 2, 128}, AttnShape{1, 100, 8, 2, 128},
                                           AttnShape{2, 5, 3, 3, 16}, AttnShape{1, 33, 2, 1, 40},
                                           AttnShape{1, 300, 2, 1, 64}));

// ‖a − b‖ / max(‖b‖, 0.01·√n): relative, with an absolute floor of 0.01 per element for a
// reference that is all but zero (one key: dS = P ⊙ (dP − Δ) is rounding noise, on both sides).
double relative_l2(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = values(a), y = values(b);
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) num += (x[i] - y[i]) * (x[i] - y[i]), den += y[i] * y[i];
  return std::sqrt(num / std::max(den, 1e-4 * double(y.size())));
}

// bf16 on tensor cores against the reference on the same (rounded) inputs in f32. The kernels
// round P and dS to bf16 for their products (relative error 2^-9 each) and their outputs once:
// out elementwise to 2e-2, lse (f32, from exact bf16 products) to 1e-3, each gradient to 2e-2
// in relative L2. Also: the kernel's dK alone equals its dK with the others.
using GpuAttentionBf16 = GpuTestWithParam<AttnShape>;

TEST_P(GpuAttentionBf16, MatchesCpu) {
  const auto [batch, seq, q_heads, kv_heads, head_dim] = GetParam();
  const Shape q_shape{batch, seq, q_heads, head_dim}, kv_shape{batch, seq, kv_heads, head_dim};
  Rng rng{uint64_t(seq * 100 + q_heads * 10 + kv_heads + head_dim + 7)};
  const GpuInput q = gpu_input<bf16>(randn(q_shape, DType::f32, rng, 2.0));
  const GpuInput k = gpu_input<bf16>(randn(kv_shape, DType::f32, rng));
  const GpuInput v = gpu_input<bf16>(randn(kv_shape, DType::f32, rng));
  const GpuInput dout = gpu_input<bf16>(randn(q_shape, DType::f32, rng));

  Tensor out = cpu_empty(q_shape), lse = cpu_empty({batch, q_heads, seq});
  Tensor dq = cpu_empty(q_shape), dk = cpu_empty(kv_shape), dv = cpu_empty(kv_shape);
  cpu::attention_forward(out.data<float>(), lse.data<float>(), q.ref.data<float>(), k.ref.data<float>(),
                         v.ref.data<float>(), batch, seq, q_heads, kv_heads, head_dim);
  cpu::attention_backward(dq.data<float>(), dk.data<float>(), dv.data<float>(), dout.ref.data<float>(),
                          q.ref.data<float>(), k.ref.data<float>(), v.ref.data<float>(), out.data<float>(),
                          lse.data<float>(), batch, seq, q_heads, kv_heads, head_dim);

  Tensor outd = gpu_empty<bf16>(q_shape), lsed = gpu_empty<float>({batch, q_heads, seq});
  cuda::attention_forward(dev<bf16>(outd), dev<float>(lsed), dev<bf16>(q.gpu), dev<bf16>(k.gpu), dev<bf16>(v.gpu),
                          batch, seq, q_heads, kv_heads, head_dim, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(outd), out, 2e-2, 2e-2)) << "out";
  EXPECT_TRUE(all_close(on_cpu(lsed), lse, 1e-3, 1e-4)) << "lse";

  // The backward reads the kernel's own out (Δ = rowsum(dO ⊙ O)) and lse.
  Tensor dqd = gpu_empty<bf16>(q_shape), dkd = gpu_empty<bf16>(kv_shape), dvd = gpu_empty<bf16>(kv_shape);
  cuda::attention_backward(dev<bf16>(dqd), dev<bf16>(dkd), dev<bf16>(dvd), dev<bf16>(dout.gpu), dev<bf16>(q.gpu),
                           dev<bf16>(k.gpu), dev<bf16>(v.gpu), dev<bf16>(outd), dev<float>(lsed), batch, seq,
                           q_heads, kv_heads, head_dim, gpu_stream());
  EXPECT_LT(relative_l2(on_cpu(dqd), dq), 2e-2) << "dq";
  EXPECT_LT(relative_l2(on_cpu(dkd), dk), 2e-2) << "dk";
  EXPECT_LT(relative_l2(on_cpu(dvd), dv), 2e-2) << "dv";

  Tensor dk_only = gpu_empty<bf16>(kv_shape);
  cuda::attention_backward(static_cast<bf16*>(nullptr), dev<bf16>(dk_only), nullptr, dev<bf16>(dout.gpu),
                           dev<bf16>(q.gpu), dev<bf16>(k.gpu), dev<bf16>(v.gpu), dev<bf16>(outd), dev<float>(lsed),
                           batch, seq, q_heads, kv_heads, head_dim, gpu_stream());
  EXPECT_TRUE(all_close(on_cpu(dk_only), on_cpu(dkd), 0, 0)) << "dk alone";
}

// One row; seq below, at and past the 64-row tile (37, 64, 100, 130, 300); GQA ratios 1, 2, 4;
// every head_dim the kernels take.
INSTANTIATE_TEST_SUITE_P(Shapes, GpuAttentionBf16,
                         ::testing::Values(AttnShape{1, 1, 1, 1, 64}, AttnShape{2, 37, 4, 1, 64},
                                           AttnShape{1, 64, 2, 2, 128}, AttnShape{1, 100, 8, 2, 128},
                                           AttnShape{2, 130, 4, 2, 96}, AttnShape{1, 300, 2, 1, 64}));

TEST_F(GpuTest, AttentionBf16RejectsOtherHeadDims) {
  const std::string message = error_of([] {
    cuda::attention_forward(static_cast<bf16*>(nullptr), nullptr, nullptr, nullptr, nullptr, 1, 4, 1, 1, 40,
                            stream());
  });
  EXPECT_NE(message.find("head_dim 64, 96 or 128, got 40"), std::string::npos) << message;
}

TEST_F(GpuTest, AttentionRejectsWideHeads) {
  const std::string message = error_of([] {
    cuda::attention_forward(static_cast<float*>(nullptr), nullptr, nullptr, nullptr, nullptr, 1, 4, 1, 1, 256,
                            stream());
  });
  EXPECT_NE(message.find("head_dim 256"), std::string::npos) << message;
}

}  // namespace
}  // namespace remoe::test
