// The CPU reference GEMM, as a linear layer x (T, d) · Wᵀ (d_out, d). Reports GFLOP/s; the CPU
// path is a reference, not a fast path, so this is here to keep its cost known (the tiny
// config trains on it) and to set the pattern for the CUDA benchmarks.
#include <benchmark/benchmark.h>

#include <vector>

#include "kernels/matmul.h"

namespace {

void BM_matmul_xwT(benchmark::State& state) {
  const int64_t T = state.range(0), d = state.range(1), d_out = state.range(2);
  std::vector<float> x(size_t(T * d), 0.5f), w(size_t(d_out * d), 0.25f), y(size_t(T * d_out));
  for (auto _ : state) {
    remoe::cpu::matmul_forward(y.data(), x.data(), w.data(), T, d_out, d, false, true);
    benchmark::DoNotOptimize(y.data());
  }
  // A rate counter holds FLOP/s (the console prints it as G/s; scripts/bench_table.py as GFLOP/s).
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * double(T * d * d_out),
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_matmul_xwT)->Args({256, 128, 512})->Args({1024, 256, 1024})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
