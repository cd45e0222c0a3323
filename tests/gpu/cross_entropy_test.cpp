// CUDA fused cross-entropy against the CPU reference (f32; the CPU sums in double).
// Skips without a visible GPU.
#include <algorithm>
#include <ostream>

#include "kernels/cross_entropy.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

struct CeShape {
  int64_t tokens, vocab;
  double ignored;  // fraction of targets set to −1 (1 = all of them)
};
void PrintTo(const CeShape& s, std::ostream* os) {
  *os << "T" << s.tokens << "_V" << s.vocab << "_ignored" << s.ignored;
}

using GpuCrossEntropy = GpuTestWithParam<CeShape>;

TEST_P(GpuCrossEntropy, MatchesCpu) {
  const auto [n_tokens, vocab, ignored] = GetParam();
  Rng rng{uint64_t(n_tokens * 13 + vocab)};
  Tensor logits = randn({n_tokens, vocab}, DType::f32, rng, 3.0);
  // Row 0 far from zero: without the max subtraction exp would overflow f32.
  for (int64_t v = 0; v < vocab; ++v) logits.data<float>()[v] += 1000.f;
  std::vector<int32_t> target_values(static_cast<size_t>(n_tokens));
  int64_t n_valid = 0;
  for (auto& t : target_values) {
    t = rng.uniform() < ignored ? -1 : int32_t(rng.below(vocab));
    n_valid += t >= 0;
  }
  if (ignored == 0.0) {
    ASSERT_EQ(n_valid, n_tokens);
  }
  if (ignored == 1.0) {
    ASSERT_EQ(n_valid, 0);
  }
  const Tensor targets = Tensor::from_vector<int32_t>({n_tokens}, target_values);
  const float dloss_value = 1.7f;
  const Tensor dloss = Tensor::full({1}, dloss_value, DType::f32);

  Tensor loss = cpu_empty({1}), lse = cpu_empty({n_tokens}), dlogits = cpu_empty({n_tokens, vocab});
  cpu::cross_entropy_forward(loss.data<float>(), lse.data<float>(), logits.data<float>(), targets.data<int32_t>(),
                             n_tokens, vocab);
  cpu::cross_entropy_backward(dlogits.data<float>(), dloss.data<float>(), logits.data<float>(), lse.data<float>(),
                              targets.data<int32_t>(), n_tokens, vocab);

  const Tensor logits_d = on_gpu(logits), targets_d = on_gpu(targets), dloss_d = on_gpu(dloss);
  const Tensor lse_cpu_d = on_gpu(lse);
  Tensor loss_d = on_gpu(Tensor::full({1}, 99.0, DType::f32)), lse_d = gpu_empty<float>({n_tokens});
  Tensor dlogits_d = on_gpu(Tensor::full({n_tokens, vocab}, 99.0, DType::f32));  // must be overwritten
  cuda::cross_entropy_forward(dev<float>(loss_d), dev<float>(lse_d), dev<float>(logits_d), dev<int32_t>(targets_d),
                              n_tokens, vocab, gpu_stream());
  // The backward reads the CPU's lse, so it is compared alone.
  cuda::cross_entropy_backward(dev<float>(dlogits_d), dev<float>(dloss_d), dev<float>(logits_d),
                               dev<float>(lse_cpu_d), dev<int32_t>(targets_d), n_tokens, vocab, gpu_stream());

  // lse sums V exponentials in f32: about V·2^-24 relative in the sum, absolute in the log.
  EXPECT_TRUE(all_close(on_cpu(lse_d), lse, kGpuF32Atol, kGpuF32Rtol)) << "lse";
  EXPECT_TRUE(all_close(on_cpu(loss_d), loss, kGpuF32Atol, kGpuF32Rtol)) << "loss";
  if (n_valid == 0) {
    EXPECT_EQ(on_cpu(loss_d).item(), 0.0);
  }
  // Gradient entries are of order dloss / n_valid; the floor scales with that.
  const double scale = n_valid > 0 ? dloss_value / double(n_valid) : 1.0;
  EXPECT_TRUE(all_close(on_cpu(dlogits_d), dlogits, 1e-6 * scale, kGpuF32Rtol)) << "dlogits";

  // Deterministic: the loss is the same bits run to run.
  Tensor loss2 = gpu_empty<float>({1});
  cuda::cross_entropy_forward(dev<float>(loss2), dev<float>(lse_d), dev<float>(logits_d), dev<int32_t>(targets_d),
                              n_tokens, vocab, gpu_stream());
  EXPECT_EQ(on_cpu(loss2).item(), on_cpu(loss_d).item());
}

INSTANTIATE_TEST_SUITE_P(Shapes, GpuCrossEntropy,
                         ::testing::Values(CeShape{1, 1, 0.0}, CeShape{1, 7, 0.0}, CeShape{5, 300, 0.3},
                                           CeShape{64, 256, 0.0}, CeShape{67, 256, 1.0},
                                           CeShape{33, 50257, 0.2}, CeShape{1000, 257, 0.5}));

}  // namespace
}  // namespace remoe::test
