// The op layer on the GPU: every op run on device tensors gives the outputs and the input
// gradients it gives on the CPU. The kernels themselves are held to their CPU twins by
// tests/gpu/<stem>_test.cpp; this checks the dispatch around them (dtypes, buffers, devices,
// saved tensors, the backward rules' launches) through the same ops the model calls.
// Tolerances: gpu_test.h (f32: atol 1e-5, rtol 1e-4; bf16: rtol 1e-2 after a cast to f32).
#include <cmath>
#include <functional>

#include "autodiff/ops.h"
#include "autodiff/random.h"
#include "autodiff/tape.h"
#include "tests/gpu/gpu_test.h"

namespace remoe::test {
namespace {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// An f32 leaf of N(0, std²) values that requires grad, on the CPU.
Tensor leaf(const Shape& shape, Rng& rng, double std = 1.0) {
  Tensor t = randn(shape, DType::f32, rng, std);
  t.set_requires_grad(true);
  return t;
}

Tensor ids(const std::vector<int32_t>& v) {
  return Tensor::from_vector<int32_t>({int64_t(v.size())}, v);
}

// Runs f on the CPU inputs and on their GPU copies, seeds both outputs with the same random
// gradient, and compares the outputs and every input's gradient.
void expect_gpu_matches_cpu(const OpFn& f, const std::vector<Tensor>& cpu_in, double atol = kGpuF32Atol,
                            double rtol = kGpuF32Rtol) {
  std::vector<Tensor> gpu_in;
  for (const Tensor& t : cpu_in) {
    t.zero_grad();  // a leaf shared by several checks would sum their gradients
    Tensor g = t.to(Device::cuda);
    if (t.requires_grad()) g.set_requires_grad(true);
    gpu_in.push_back(g);
  }
  // One device's forward and backward, then the other's: the tape is one per thread, and a
  // backward pass takes all of it (the CPU's would take the GPU's nodes too).
  const Tensor y_cpu = f(cpu_in);
  Rng rng(7);
  const Tensor seed = randn(y_cpu.shape(), y_cpu.dtype(), rng);
  if (y_cpu.requires_grad()) backward(y_cpu, seed);
  const Tensor y_gpu = f(gpu_in);
  ASSERT_EQ(y_gpu.device(), Device::cuda);
  EXPECT_TRUE(all_close(y_gpu.to(Device::cpu), y_cpu, atol, rtol)) << "output";
  if (!y_cpu.requires_grad()) return;
  backward(y_gpu, seed.to(Device::cuda));
  for (size_t i = 0; i < cpu_in.size(); ++i) {
    if (!cpu_in[i].requires_grad()) continue;
    ASSERT_TRUE(gpu_in[i].grad().defined()) << "input " << i << " got no gradient on the GPU";
    EXPECT_TRUE(all_close(gpu_in[i].grad().to(Device::cpu), cpu_in[i].grad(), atol, rtol))
        << "gradient of input " << i;
  }
}

class GpuOps : public GpuTest {};

TEST_F(GpuOps, ElementwiseAndViews) {
  Rng rng(1);
  expect_gpu_matches_cpu([](const auto& in) { return ops::add(in[0], in[1]); },
                         {leaf({5, 7}, rng), leaf({5, 7}, rng)});
  expect_gpu_matches_cpu([](const auto& in) { return ops::scale(in[0], -0.375); }, {leaf({33}, rng)});
  expect_gpu_matches_cpu([](const auto& in) { return ops::reshape(in[0], {7, 5}); },
                         {leaf({5, 7}, rng)});
  // f32 → bf16 → f32 rounds to bf16; the gradient comes back through both casts.
  expect_gpu_matches_cpu(
      [](const auto& in) { return ops::cast(ops::cast(in[0], DType::bf16), DType::f32); },
      {leaf({129}, rng)}, 0.0, 0.0);
}

TEST_F(GpuOps, InPlaceAddOnTheGpu) {
  Rng rng(2);
  const Tensor a = randn({1000}, DType::f32, rng), b = randn({1000}, DType::f32, rng);
  const Tensor ga = a.to(Device::cuda);
  ops::add_(ga, b.to(Device::cuda));
  ops::add_(a, b);
  EXPECT_TRUE(all_close(ga.to(Device::cpu), a, 0.0, 0.0));
}

TEST_F(GpuOps, MatmulInEveryLayout) {
  Rng rng(3);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t M = 37, N = 19, K = 23;
      const Tensor a = leaf(ta ? Shape{K, M} : Shape{M, K}, rng);
      const Tensor b = leaf(tb ? Shape{N, K} : Shape{K, N}, rng);
      SCOPED_TRACE(testing::Message() << "trans_a " << ta << ", trans_b " << tb);
      expect_gpu_matches_cpu([&](const auto& in) { return ops::matmul(in[0], in[1], ta, tb); },
                             {a, b});
    }
}

TEST_F(GpuOps, TransformerPieces) {
  Rng rng(4);
  expect_gpu_matches_cpu([](const auto& in) { return ops::embedding(in[1], in[0]); },
                         {leaf({11, 6}, rng), ids({3, 0, 10, 3, 7})});
  expect_gpu_matches_cpu([](const auto& in) { return ops::rmsnorm(in[0], in[1], 1e-5); },
                         {leaf({9, 24}, rng), leaf({24}, rng)});
  expect_gpu_matches_cpu([](const auto& in) { return ops::rope(in[0], 10000.0); },
                         {leaf({2, 13, 3, 8}, rng)});
  expect_gpu_matches_cpu([](const auto& in) { return ops::swiglu(in[0], in[1]); },
                         {leaf({7, 9}, rng), leaf({7, 9}, rng)});
  expect_gpu_matches_cpu([](const auto& in) { return ops::attention(in[0], in[1], in[2]); },
                         {leaf({2, 19, 4, 16}, rng), leaf({2, 19, 2, 16}, rng),
                          leaf({2, 19, 2, 16}, rng)});
  expect_gpu_matches_cpu([](const auto& in) { return ops::cross_entropy(in[0], in[1]); },
                         {leaf({6, 50}, rng), ids({1, 49, -1, 0, 7, 7})});
}

// Attention on bf16 tensors (the tensor-core kernels at head_dim 64; the f32 kernels behind
// casts at head_dim 8) against the CPU in f32 on the same rounded values: the output and every
// input's gradient within 2e-2 in relative L2, the gradients bf16 like their tensors.
TEST_F(GpuOps, AttentionOnBf16Tensors) {
  Rng rng(13);
  for (int64_t head_dim : {64, 8}) {
    SCOPED_TRACE(testing::Message() << "head_dim " << head_dim);
    std::vector<Tensor> cpu_in, gpu_in;
    for (const Shape& shape : {Shape{2, 70, 4, head_dim}, Shape{2, 70, 2, head_dim}, Shape{2, 70, 2, head_dim}}) {
      const Tensor rounded = ops::cast(ops::cast(randn(shape, DType::f32, rng), DType::bf16), DType::f32);
      cpu_in.push_back(rounded.clone().set_requires_grad(true));
      gpu_in.push_back(ops::cast(rounded, DType::bf16).to(Device::cuda).set_requires_grad(true));
    }
    const Tensor y_cpu = ops::attention(cpu_in[0], cpu_in[1], cpu_in[2]);
    const Tensor seed = ops::cast(ops::cast(randn(y_cpu.shape(), DType::f32, rng), DType::bf16), DType::f32);
    backward(y_cpu, seed);
    const Tensor y_gpu = ops::attention(gpu_in[0], gpu_in[1], gpu_in[2]);
    ASSERT_EQ(y_gpu.dtype(), DType::bf16);
    backward(y_gpu, ops::cast(seed, DType::bf16).to(Device::cuda));
    const auto rel = [](const Tensor& a, const Tensor& b) {
      const std::vector<double> x = values(a), y = values(b);
      double num = 0, den = 0;
      for (size_t i = 0; i < y.size(); ++i) num += (x[i] - y[i]) * (x[i] - y[i]), den += y[i] * y[i];
      return std::sqrt(num / den);
    };
    EXPECT_LT(rel(ops::cast(y_gpu, DType::f32).to(Device::cpu), y_cpu), 2e-2) << "output";
    for (size_t i = 0; i < 3; ++i) {
      ASSERT_TRUE(gpu_in[i].grad().defined()) << "input " << i;
      EXPECT_EQ(gpu_in[i].grad().dtype(), DType::bf16) << "input " << i;
      EXPECT_LT(rel(ops::cast(gpu_in[i].grad(), DType::f32).to(Device::cpu), cpu_in[i].grad()), 2e-2)
          << "gradient of input " << i;
    }
  }
}

TEST_F(GpuOps, RoutersAndTheirLosses) {
  Rng rng(5);
  for (int64_t E : {1, 8, 64}) {
    SCOPED_TRACE(testing::Message() << "E = " << E);
    const Tensor logits = leaf({37, E}, rng);
    expect_gpu_matches_cpu([](const auto& in) { return ops::relu_router(in[0]).gates; }, {logits});
    for (bool renorm : {false, true}) {
      const int k = int(std::min<int64_t>(E, 2));
      expect_gpu_matches_cpu(
          [&](const auto& in) {
            const ops::Routing r = ops::topk_router(in[0], k, renorm);
            return ops::add(r.gates, r.probs);  // both outputs carry gradient
          },
          {logits});
    }
    expect_gpu_matches_cpu(
        [](const auto& in) {
          const ops::Routing r = ops::relu_router(in[0]);
          return ops::load_balance_loss(r.gates, r.expert_counts, 0.5, 1);
        },
        {logits});
    expect_gpu_matches_cpu(
        [](const auto& in) { return ops::l1_loss(ops::relu_router(in[0]).gates, 0.25); }, {logits});
  }
}

// The routers of issue 10 and TopK's knobs through the op layer: z-loss, expert choice, the
// selection bias, capacity dropping and hash routing.
TEST_F(GpuOps, RouterVariants) {
  Rng rng(12);
  const Tensor logits = leaf({37, 8}, rng);
  const Tensor bias = Tensor::from_vector<float>({8}, {0.3f, 0, 0, -0.2f, 0, 0.5f, 0, 0});
  expect_gpu_matches_cpu([](const auto& in) { return ops::z_loss(in[0], 1e-3); }, {logits});
  expect_gpu_matches_cpu(
      [](const auto& in) {
        const ops::Routing r = ops::expert_choice_router(in[0], 5);
        return ops::add(r.gates, r.probs);
      },
      {logits});
  expect_gpu_matches_cpu(
      [](const auto& in) {
        const ops::Routing r = ops::topk_router(in[0], 2, false, in[1]);
        return ops::add(r.gates, r.probs);
      },
      {logits, bias});
  for (bool by_position : {false, true})
    expect_gpu_matches_cpu(
        [&](const auto& in) {
          const ops::Routing r = ops::topk_router(in[0], 2);
          return ops::drop_over_capacity(r, r.probs, 6, by_position).gates;
        },
        {logits});
  expect_gpu_matches_cpu(
      [](const auto& in) { return ops::hash_router(in[0], 8, 2, DType::f32).gates; },
      {ids({5, 0, 255, 5, 17, 99, 3})});
}

TEST_F(GpuOps, RoutingStatisticsAreTheCpusExactly) {
  Rng rng(6);
  const Tensor logits = randn({101, 16}, DType::f32, rng);
  const ops::Routing c = ops::relu_router(logits), g = ops::relu_router(logits.to(Device::cuda));
  EXPECT_EQ(g.mask.to_vector<int32_t>(), c.mask.to_vector<int32_t>());
  EXPECT_EQ(g.expert_counts.to_vector<int32_t>(), c.expert_counts.to_vector<int32_t>());
  EXPECT_EQ(g.token_counts.to_vector<int32_t>(), c.token_counts.to_vector<int32_t>());
  EXPECT_EQ(g.nonzero.item(), c.nonzero.item());
  EXPECT_EQ(ops::sparsity(g), ops::sparsity(c));
  EXPECT_TRUE(all_close(g.score_sums.to(Device::cpu), c.score_sums, kGpuF32Atol, kGpuF32Rtol));
}

// The MoE layer's dispatch chain: route, permute, gather, grouped GEMM, combine. Shifting the
// logits down leaves experts no token picks and tokens with no expert; T = 45 is off every tile.
TEST_F(GpuOps, RoutePermuteGatherGroupedMatmulCombine) {
  Rng rng(8);
  for (double shift : {0.0, -2.5}) {
    SCOPED_TRACE(testing::Message() << "logit shift " << shift);
    const int64_t T = 45, E = 8, d = 24, f = 40;
    Tensor logits = ops::add(randn({T, E}, DType::f32, rng), Tensor::full({T, E}, shift, DType::f32));
    logits.set_requires_grad(true);
    expect_gpu_matches_cpu(
        [](const auto& in) {
          const ops::Routing r = ops::relu_router(in[2]);
          const ops::Permutation p = ops::permute(r.mask);
          const Tensor h = ops::grouped_matmul(ops::gather_rows(in[0], p), in[1], p);  // (N, f)
          return ops::combine(h, r.gates, p);                                        // (T, f)
        },
        {leaf({T, d}, rng), leaf({E, f, d}, rng, 0.2), logits}, 1e-4, 1e-4);
  }
}

TEST_F(GpuOps, PermutationMatchesTheCpu) {
  Rng rng(9);
  const Tensor logits = randn({77, 8}, DType::f32, rng);
  const ops::Routing r = ops::relu_router(logits);
  const ops::Permutation c = ops::permute(r.mask), g = ops::permute(r.mask.to(Device::cuda));
  EXPECT_EQ(g.n_rows, c.n_rows);
  EXPECT_EQ(g.expert_offsets.to_vector<int32_t>(), c.expert_offsets.to_vector<int32_t>());
  EXPECT_EQ(g.token_index.to_vector<int32_t>(), c.token_index.to_vector<int32_t>());
  EXPECT_EQ(g.row_of.to_vector<int32_t>(), c.row_of.to_vector<int32_t>());
}

TEST_F(GpuOps, OptimizerStepAndGradNorm) {
  Rng rng(10);
  const Tensor p = randn({300}, DType::f32, rng), g = randn({300}, DType::f32, rng);
  Tensor pc = p.clone(), pg = p.to(Device::cuda);
  pc.set_grad(g.clone());
  pg.set_grad(g.to(Device::cuda));
  const Tensor mc = Tensor::zeros({300}, DType::f32), vc = Tensor::zeros({300}, DType::f32);
  const Tensor mg = mc.to(Device::cuda), vg = vc.to(Device::cuda);
  EXPECT_NEAR(ops::grad_norm({pg}), ops::grad_norm({pc}), 1e-9 * ops::grad_norm({pc}));
  EXPECT_NEAR(ops::clip_grad_norm({pg}, 1.0), ops::clip_grad_norm({pc}, 1.0), 1e-6);
  EXPECT_TRUE(all_close(pg.grad().to(Device::cpu), pc.grad(), kGpuF32Atol, kGpuF32Rtol));
  const cpu::AdamWHyper h{1e-2, 0.9, 0.999, 1e-8, 0.1};
  for (int64_t step = 1; step <= 3; ++step) {
    ops::adamw_step(pc, mc, vc, h, step);
    ops::adamw_step(pg, mg, vg, h, step);
  }
  EXPECT_TRUE(all_close(pg.to(Device::cpu), pc, kGpuF32Atol, kGpuF32Rtol));
  EXPECT_TRUE(all_close(vg.to(Device::cpu), vc, kGpuF32Atol, kGpuF32Rtol));
}

// The list form: every parameter in one multi-tensor launch, decay per parameter, against the
// CPU's one-by-one updates.
TEST_F(GpuOps, AdamWOverAParameterListInOneLaunch) {
  Rng rng(13);
  const std::vector<Shape> shapes = {{3, 5}, {7}, {1}, {64, 33}};
  const std::vector<bool> decay = {true, false, false, true};
  std::vector<Tensor> pc, mc, vc, pg, mg, vg;
  for (const Shape& s : shapes) {
    Tensor p = randn(s, DType::f32, rng);
    p.set_grad(randn(s, DType::f32, rng));
    Tensor q = p.to(Device::cuda);
    q.set_grad(p.grad().to(Device::cuda));
    pc.push_back(p);
    pg.push_back(q);
    mc.push_back(Tensor::zeros(s, DType::f32));
    vc.push_back(Tensor::zeros(s, DType::f32));
    mg.push_back(mc.back().to(Device::cuda));
    vg.push_back(vc.back().to(Device::cuda));
  }
  const cpu::AdamWHyper h{1e-2, 0.9, 0.999, 1e-8, 0.1};
  for (int64_t step = 1; step <= 2; ++step) {
    ops::adamw_step(pc, mc, vc, decay, h, step);
    ops::adamw_step(pg, mg, vg, decay, h, step);
  }
  for (size_t i = 0; i < shapes.size(); ++i)
    EXPECT_TRUE(all_close(pg[i].to(Device::cpu), pc[i], kGpuF32Atol, kGpuF32Rtol)) << "tensor " << i;
}

TEST_F(GpuOps, MixedDevicesAndUnsupportedDtypesSaySo) {
  Rng rng(11);
  const Tensor a = randn({4, 4}, DType::f32, rng);
  expect_contains(error_of([&] { ops::add(a, a.to(Device::cuda)); }), "devices differ");
  expect_contains(error_of([&] { ops::attention(Tensor::zeros({1, 2, 1, 4}, DType::f64, Device::cuda),
                                                Tensor::zeros({1, 2, 1, 4}, DType::f64, Device::cuda),
                                                Tensor::zeros({1, 2, 1, 4}, DType::f64, Device::cuda)); }),
                  "dtype f64 is not supported by the CUDA kernels (f32 and bf16 are)");
}

}  // namespace
}  // namespace remoe::test
