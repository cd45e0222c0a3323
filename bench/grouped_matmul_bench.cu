// The experts' grouped GEMM (kernels/grouped_matmul.h), bf16 in, fp32 accumulation, bf16 out,
// against one dense cuBLAS GEMM of the same total shape measured in the same process:
//   forward  y  (M, N_out) = x (M, K) · W[e]ᵀ per group    vs  x · Wᵀ          2·M·N_out·K FLOP
//   dx       dx (M, K)     = dy (M, N_out) · W[e]           vs  dy · W          2·M·N_out·K
//   dw       dw (E, N_out, K) = dy[g]ᵀ · x[g] (K-grouped)   vs  dyᵀ · x (N_out, K)  2·M·N_out·K
// with M = T·k routed rows, for each implementation: `tiled` (v1, WMMA) and `hopper` (v2,
// TMA + wgmma, persistent; skipped with its reason where it cannot run). Each MoE config runs both projections of its experts: `up` (W1 and
// W3 each: K = d, N_out = d_ffn/G) and `down` (W2: K = d_ffn/G, N_out = d). Loads: `uni`
// (near-uniform, each expert within ±10% of M/E) and `zipf` (c_e ∝ 1/(e+1) over E − 1 experts,
// the last expert empty). The shapes are listed in bench/README.md with the reasons.
#include "bench/cuda_bench.cuh"
#include "kernels/grouped_matmul.h"

#include <numeric>

namespace remoe::bench {
namespace {

enum class Load { kUniform, kZipf };
enum class Op { kForward, kDx, kDw };

const char* load_name(Load l) { return l == Load::kUniform ? "uni" : "zipf"; }
const char* op_name(Op op) {
  return op == Op::kForward ? "grouped_matmul_forward"
         : op == Op::kDx    ? "grouped_matmul_backward_dx"
                            : "grouped_matmul_backward_dw";
}

// Rows per expert summing to M.
std::vector<int32_t> expert_counts(Load load, int64_t M, int64_t E) {
  std::vector<double> w(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e)
    w[size_t(e)] = load == Load::kUniform ? 1.0 + 0.1 * std::sin(1.7 * double(e) + 0.3)
                   : e + 1 < E || E == 1  ? 1.0 / double(e + 1)
                                          : 0.0;  // the empty expert
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<int32_t> c(static_cast<size_t>(E));
  int64_t assigned = 0;
  for (int64_t e = 0; e < E; ++e) assigned += c[size_t(e)] = int32_t(double(M) * w[size_t(e)] / total);
  c[0] += int32_t(M - assigned);
  return c;
}

struct Case {
  const char* config;  // which paper shape it stands for
  int64_t T, k, E, d, h;  // tokens, experts per token, experts, d_model, d_ffn / G
  Load load;
  bool worst_case_capacity = false;  // max_rows = T·E (the CUDA backend's planned buffers)
};

using Impl = cuda::GroupedMatmulImpl;
const char* impl_name(Impl impl) { return impl == Impl::hopper ? "hopper" : "tiled"; }

void run(benchmark::State& state, const Case& c, bool up, Op op, Impl impl) {
  const int64_t M = c.T * c.k, E = c.E;
  const int64_t K = up ? c.d : c.h, NO = up ? c.h : c.d;
  const int64_t max_rows = c.worst_case_capacity ? c.T * c.E : M;
  const std::vector<int32_t> counts = expert_counts(c.load, M, E);
  std::vector<int32_t> offsets(size_t(E + 1), 0);
  std::partial_sum(counts.begin(), counts.end(), offsets.begin() + 1);
  const Buffer<int32_t> off = upload(offsets);

  // x (max_rows, K), w (E, N_out, K), y/dy (max_rows, N_out), dx (max_rows, K), dw (E, N_out, K)
  Buffer<bf16> a(size_t(max_rows) * size_t(op == Op::kDx ? NO : K));  // x, or dy for dx
  Buffer<bf16> b(size_t(op == Op::kDw ? 0 : E * NO * K));              // w (unused by dw)
  Buffer<bf16> out(size_t(op == Op::kForward ? max_rows * NO : op == Op::kDx ? max_rows * K
                                                                              : E * NO * K));
  Buffer<bf16> dy_dw(op == Op::kDw ? size_t(max_rows * NO) : 0);
  fill_normal(a.get(), a.size(), 1);
  fill_normal(b.get(), b.size(), 2);
  fill_normal(dy_dw.get(), dy_dw.size(), 3);
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  if (impl == Impl::hopper) {
    const std::string why = cuda::grouped_matmul_hopper_unsupported<bf16>(K, NO, {});
    if (!why.empty()) return state.SkipWithError(why.c_str());
  }

  const double flops = 2.0 * double(M) * double(NO) * double(K);
  double base = 0;
  std::function<void(int64_t)> launch;
  switch (op) {
    case Op::kForward:  // y = x · W[e]ᵀ;  cuBLAS: x (M, K) · W[0]ᵀ
      base = cublas_tflops(out.get(), a.get(), b.get(), M, NO, K, false, true, CUDA_R_16BF);
      launch = [&](int64_t) {
        cuda::grouped_matmul_forward(out.get(), a.get(), b.get(), off.get(), E, K, NO, max_rows,
                                     stream(), impl);
      };
      break;
    case Op::kDx:  // dx = dy · W[e];  cuBLAS: dy (M, N_out) · W[0] (N_out, K)
      base = cublas_tflops(out.get(), a.get(), b.get(), M, K, NO, false, false, CUDA_R_16BF);
      launch = [&](int64_t) {
        cuda::grouped_matmul_backward<bf16>(out.get(), nullptr, a.get(), nullptr, b.get(),
                                            off.get(), E, K, NO, max_rows, stream(), impl);
      };
      break;
    case Op::kDw:  // dw[e] = dy[g]ᵀ · x[g];  cuBLAS: dyᵀ (N_out, M) · x (M, K)
      base = cublas_tflops(out.get(), dy_dw.get(), a.get(), NO, K, M, true, false, CUDA_R_16BF);
      launch = [&](int64_t) {
        cuda::grouped_matmul_backward<bf16>(nullptr, out.get(), dy_dw.get(), a.get(), nullptr,
                                            off.get(), E, K, NO, max_rows, stream(), impl);
      };
      break;
  }
  const Timing t = time_launches(state, launch);
  report_flops(state, flops, t, base);
  state.counters["max_rows_per_expert"] = double(*std::max_element(counts.begin(), counts.end()));
}

void register_all() {
  // Representative subset of the issue's grid (bench/README.md says why each is here).
  const std::vector<Case> cases = {
      {"182M", 8192, 1, 8, 768, 3072, Load::kUniform},
      {"182M", 8192, 1, 8, 768, 3072, Load::kZipf},
      {"182M-G4", 32768, 4, 32, 768, 768, Load::kUniform},
      {"182M-G4", 32768, 4, 32, 768, 768, Load::kZipf},
      {"469M-G8", 65536, 8, 64, 1024, 512, Load::kUniform},
      {"978M-G8", 16384, 8, 128, 1536, 768, Load::kUniform},
      {"978M-G8", 16384, 8, 128, 1536, 768, Load::kZipf},
      {"978M", 16384, 2, 8, 1536, 6144, Load::kUniform},
  };
  for (const Case& c : cases)
    for (bool up : {true, false})
      for (Op op : {Op::kForward, Op::kDx, Op::kDw})
        for (Impl impl : {Impl::tiled, Impl::hopper}) {
          const std::string name = shape_name(
              op_name(op), {{"impl", impl_name(impl)}, {"cfg", c.config}, {"proj", up ? "up" : "down"},
                            {"load", load_name(c.load)}, {"T", num(c.T)}, {"k", num(c.k)},
                            {"E", num(c.E)}, {"M", num(c.T * c.k)}, {"K", num(up ? c.d : c.h)},
                            {"N", num(up ? c.h : c.d)}});
          add(name, [c, up, op, impl](benchmark::State& s) { run(s, c, up, op, impl); });
        }
  // The capacity the CUDA backend plans for dropless ReLU routing (model/README.md): buffers of
  // T·E rows, so the M-grouped grid has T·E/64 + E row slots of which T·k/64 + E do work.
  // (The hopper grid is persistent, one CTA per SM whatever max_rows is.)
  Case cap{"182M", 8192, 1, 8, 768, 3072, Load::kUniform, true};
  for (Impl impl : {Impl::tiled, Impl::hopper})
    add(shape_name(op_name(Op::kForward),
                   {{"impl", impl_name(impl)}, {"cfg", "182M"}, {"proj", "up"}, {"load", "uni"},
                    {"T", "8192"}, {"k", "1"}, {"E", "8"}, {"M", "8192"}, {"K", "768"},
                    {"N", "3072"}, {"max_rows", "65536"}}),
        [cap, impl](benchmark::State& s) { run(s, cap, true, Op::kForward, impl); });
}

}  // namespace
}  // namespace remoe::bench

int main(int argc, char** argv) { return remoe::bench::run_main(argc, argv, remoe::bench::register_all); }
