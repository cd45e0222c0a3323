// CUDA AdamW against the CPU reference (both update in double from f32 state), one tensor and
// the multi-tensor list across launch boundaries. Skips without a visible GPU.
#include <vector>

#include "kernels/adamw.h"
#include "tests/gpu/inputs.h"

namespace remoe::test {
namespace {

// Double math on both sides; only contraction into FMAs may move the last f32 bit.
constexpr double kAdamAtol = 1e-7, kAdamRtol = 1e-6;

struct State {
  Tensor param, m, v, grad;  // CPU, f32
};

State make_state(int64_t n, Rng& rng) {
  State s{randn({n}, DType::f32, rng), randn({n}, DType::f32, rng, 0.01),
          rand_uniform({n}, DType::f32, rng, 0.0, 1e-3), randn({n}, DType::f32, rng, 0.1)};
  return s;
}

State to_gpu(const State& s) { return {on_gpu(s.param), on_gpu(s.m), on_gpu(s.v), on_gpu(s.grad)}; }

void expect_state_close(const State& gpu, const State& cpu, const std::string& what) {
  EXPECT_TRUE(all_close(on_cpu(gpu.param), cpu.param, kAdamAtol, kAdamRtol)) << what << " param";
  EXPECT_TRUE(all_close(on_cpu(gpu.m), cpu.m, kAdamAtol, kAdamRtol)) << what << " m";
  EXPECT_TRUE(all_close(on_cpu(gpu.v), cpu.v, kAdamAtol, kAdamRtol)) << what << " v";
}

using GpuAdamW = GpuTestWithParam<int64_t>;

TEST_P(GpuAdamW, OneTensorMatchesCpu) {
  const int64_t n = GetParam();
  Rng rng{uint64_t(n)};
  State cpu_state = make_state(n, rng);
  State gpu_state = to_gpu(cpu_state);
  const cpu::AdamWHyper hyper{1e-3, 0.9, 0.95, 1e-8, 0.1};
  for (int64_t step = 1; step <= 3; ++step) {
    cpu::adamw_step(cpu_state.param.data<float>(), cpu_state.m.data<float>(), cpu_state.v.data<float>(),
                    cpu_state.grad.data<float>(), n, hyper, step);
    cuda::adamw_step(dev<float>(gpu_state.param), dev<float>(gpu_state.m), dev<float>(gpu_state.v),
                     dev<float>(gpu_state.grad), n, hyper, step, gpu_stream());
  }
  expect_state_close(gpu_state, cpu_state, "n=" + std::to_string(n));
}

// Around the per-block chunk (16384) and one tensor spanning several launches (256 blocks each).
INSTANTIATE_TEST_SUITE_P(Sizes, GpuAdamW, ::testing::Values(1, 7, 16384, 16385, 5'000'000));

TEST_F(GpuTest, AdamWListMatchesCpuPerTensor) {
  // 70 tensors (more than the 32 a launch carries), an empty one, a large one in the middle that
  // starts mid-launch and spills over (> 256 chunks), and per-tensor weight decay.
  Rng rng(3);
  std::vector<int64_t> sizes;
  for (int i = 0; i < 70; ++i) sizes.push_back(1 + rng.below(40000));
  sizes[5] = 0;
  sizes[31] = 300 * 16384 + 11;
  std::vector<State> cpu_states, gpu_states;
  std::vector<cuda::AdamWTensor> list;
  for (size_t i = 0; i < sizes.size(); ++i) {
    cpu_states.push_back(make_state(sizes[i], rng));
    gpu_states.push_back(to_gpu(cpu_states.back()));
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    const State& g = gpu_states[i];
    list.push_back({dev<float>(g.param), dev<float>(g.m), dev<float>(g.v), dev<float>(g.grad), sizes[i],
                    i % 3 == 0 ? 0.0 : 0.1});
  }
  cpu::AdamWHyper hyper{2e-3, 0.9, 0.999, 1e-8, 0.5};  // weight_decay here is ignored by the list form
  for (int64_t step = 1; step <= 2; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      cpu::AdamWHyper h = hyper;
      h.weight_decay = list[i].weight_decay;
      State& c = cpu_states[i];
      cpu::adamw_step(c.param.data<float>(), c.m.data<float>(), c.v.data<float>(), c.grad.data<float>(), sizes[i],
                      h, step);
    }
    cuda::adamw_step(list.data(), int64_t(list.size()), hyper, step, stream());
  }
  for (size_t i = 0; i < sizes.size(); ++i)
    expect_state_close(gpu_states[i], cpu_states[i], "tensor " + std::to_string(i));
}

}  // namespace
}  // namespace remoe::test
