// The transformer's own kernels on the paper's shapes (T = 8 × 1024 tokens per micro-batch):
//   matmul_forward / _backward, bf16 in, fp32 accumulation, bf16 out (kernels/matmul.h), as the
//     linear layers x (T, K) · Wᵀ (N, K), against cuBLAS on the same shape:
//     forward 2·M·N·K FLOP; backward dA = dC·B and dB = dCᵀ·A, 4·M·N·K, against the two cuBLAS
//     GEMMs (their times summed).
//   attention_forward / _backward (causal, kernels/attention.h; dtype f32: the CUDA-core kernels,
//     dtype bf16: the tensor-core ones) in TFLOP/s:
//     forward counts QKᵀ and PV, 2 GEMMs of 2·B·Hq·S²·Dh halved by the causal mask,
//     = 2·B·Hq·S²·Dh; backward counts 5 such GEMMs (S = QKᵀ recomputed, dV = PᵀdO, dP = dO Vᵀ,
//     dQ = dS K, dK = dSᵀ Q), = 5·B·Hq·S²·Dh (the softmax's elementwise work is not counted).
//     No cuBLAS twin exists: the ratios are to a dense cuBLAS GEMM measured in the same run as
//     the reference peak, bf16 8192³ (`ratio`, tensor cores) and f32 4096³ (`ratio_f32`,
//     CUDA cores, which is what the f32 kernels can use).
//   cross_entropy_forward / _backward (f32 logits) and rmsnorm_forward / _backward (bf16 rows,
//     f32 weight and rstd) in GB/s against a device-to-device copy of the same bytes:
//     cross_entropy_forward   logits in, targets in, lse out                 4·T·V + 8·T
//     cross_entropy_backward  logits + targets + lse in, dlogits out         8·T·V + 8·T
//     rmsnorm_forward         x in, y out (bf16), rstd out, w in (f32)       4·R·d + 4·R + 4·d
//     rmsnorm_backward        dy + x in, dx out (bf16), rstd + w in, dw out  6·R·d + 4·R + 8·d
#include "bench/cuda_bench.cuh"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"

namespace remoe::bench {
namespace {

// --- matmul -------------------------------------------------------------------------------------

struct Linear {
  const char* config;
  const char* layer;
  int64_t M, N, K;  // x (M, K) · Wᵀ, W (N, K)
};

void run_matmul(benchmark::State& state, const Linear& l, bool backward) {
  const int64_t M = l.M, N = l.N, K = l.K;
  Buffer<bf16> a(size_t(M * K)), b(size_t(N * K)), c(size_t(M * N));
  fill_normal(a.get(), a.size(), 1);
  fill_normal(b.get(), b.size(), 2);
  fill_normal(c.get(), c.size(), 3);  // dC for backward
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  if (!backward) {
    const double base = cublas_tflops(c.get(), a.get(), b.get(), M, N, K, false, true, CUDA_R_16BF);
    const Timing t = time_launches(state, [&](int64_t) {
      cuda::matmul_forward(c.get(), a.get(), b.get(), M, N, K, false, true, stream());
    });
    report_flops(state, 2.0 * double(M * N) * double(K), t, base);
    return;
  }
  Buffer<bf16> da(size_t(M * K)), db(size_t(N * K));
  const double gemm_flops = 2.0 * double(M * N) * double(K);
  // dA (M, K) = dC (M, N) · B (N, K);  dB (N, K) = dCᵀ (N, M) · A (M, K)
  const double t_da = cublas_tflops(da.get(), c.get(), b.get(), M, K, N, false, false, CUDA_R_16BF);
  const double t_db = cublas_tflops(db.get(), c.get(), a.get(), N, K, M, true, false, CUDA_R_16BF);
  const double base = t_da > 0 && t_db > 0
                          ? 2 * gemm_flops / (gemm_flops / t_da + gemm_flops / t_db)
                          : 0.0;
  const Timing t = time_launches(state, [&](int64_t) {
    cuda::matmul_backward(da.get(), db.get(), c.get(), a.get(), b.get(), M, N, K, false, true,
                          stream());
  });
  report_flops(state, 2 * gemm_flops, t, base);
}

// --- attention ------------------------------------------------------------------------------------

struct Attention {
  const char* config;
  int64_t B, S, Hq, Hkv, Dh;
};

// The reference peaks: dense cuBLAS GEMMs on buffers of their own, measured once per process.
std::pair<double, double> reference_peaks() {
  static const std::pair<double, double> peaks = [] {
    double bf16_peak = 0, f32_peak = 0;
    {
      const int64_t n = 8192;
      Buffer<bf16> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
      fill_normal(a.get(), a.size(), 4);
      fill_normal(b.get(), b.size(), 5);
      bf16_peak = cublas_tflops(c.get(), a.get(), b.get(), n, n, n, false, false, CUDA_R_16BF);
    }
    {
      const int64_t n = 4096;
      Buffer<float> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
      fill_normal(a.get(), a.size(), 6);
      fill_normal(b.get(), b.size(), 7);
      f32_peak = cublas_tflops(c.get(), a.get(), b.get(), n, n, n, false, false, CUDA_R_32F);
    }
    return std::make_pair(bf16_peak, f32_peak);
  }();
  return peaks;
}

template <typename T>
void run_attention(benchmark::State& state, const Attention& c, bool backward) {
  const size_t nq = size_t(c.B * c.S * c.Hq * c.Dh), nkv = size_t(c.B * c.S * c.Hkv * c.Dh);
  Buffer<T> q(nq), k(nkv), v(nkv), out(nq);
  Buffer<float> lse(size_t(c.B * c.Hq * c.S));
  fill_normal(q.get(), nq, 1);
  fill_normal(k.get(), nkv, 2);
  fill_normal(v.get(), nkv, 3);
  cuda::attention_forward(out.get(), lse.get(), q.get(), k.get(), v.get(), c.B, c.S, c.Hq, c.Hkv,
                          c.Dh, stream());
  const double gemm = 2.0 * double(c.B * c.Hq) * double(c.S) * double(c.S) * double(c.Dh) / 2;
  Timing t;
  if (!backward) {
    t = time_launches(state, [&](int64_t) {
      cuda::attention_forward(out.get(), lse.get(), q.get(), k.get(), v.get(), c.B, c.S, c.Hq,
                              c.Hkv, c.Dh, stream());
    });
  } else {
    Buffer<T> dout(nq), dq(nq), dk(nkv), dv(nkv);
    fill_normal(dout.get(), nq, 4);
    t = time_launches(state, [&](int64_t) {
      cuda::attention_backward(dq.get(), dk.get(), dv.get(), dout.get(), q.get(), k.get(),
                               v.get(), out.get(), lse.get(), c.B, c.S, c.Hq, c.Hkv, c.Dh,
                               stream());
    });
  }
  const auto [bf16_peak, f32_peak] = reference_peaks();
  report_flops(state, (backward ? 5 : 2) * gemm, t, bf16_peak, "cublas_bf16_8192_TFLOP/s");
  if (f32_peak > 0 && t.launches > 0) {
    state.counters["cublas_f32_4096_TFLOP/s"] = f32_peak;
    state.counters["ratio_f32"] = state.counters["TFLOP/s"].value / f32_peak;
  }
}

// --- cross-entropy and rmsnorm ----------------------------------------------------------------

__global__ void fill_targets_kernel(int32_t* t, size_t n, int64_t vocab, uint64_t seed) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    t[i] = int32_t(splitmix64(seed * 0x100000001B3ull + i) % uint64_t(vocab));
}

void run_cross_entropy(benchmark::State& state, int64_t T, int64_t V, bool backward) {
  const double bytes = backward ? 8.0 * double(T * V) + 8.0 * double(T) : 4.0 * double(T * V) + 8.0 * double(T);
  const int sets = rotation_sets(bytes);
  Rotating<float> logits(size_t(T * V), sets), lse(size_t(T), sets), loss(1, sets);
  Rotating<int32_t> targets(size_t(T), sets);
  fill_normal(logits, 1, 0.0f, 2.0f);
  for (int s = 0; s < sets; ++s) {
    fill_targets_kernel<<<256, 256, 0, stream()>>>(targets[s], size_t(T), V, 100 + uint64_t(s));
    CUDA_CHECK(cudaGetLastError());
    cuda::cross_entropy_forward(loss[s], lse[s], logits[s], targets[s], T, V, stream());
  }
  Timing t;
  if (!backward) {
    t = time_launches(state, [&](int64_t i) {
      cuda::cross_entropy_forward(loss[i], lse[i], logits[i], targets[i], T, V, stream());
    });
  } else {
    Rotating<float> dlogits(size_t(T * V), sets), dloss(1, sets);
    fill_normal(dloss, 9, 1.0f, 0.0f);
    t = time_launches(state, [&](int64_t i) {
      cuda::cross_entropy_backward(dlogits[i], dloss[i], logits[i], lse[i], targets[i], T, V,
                                   stream());
    });
  }
  report_bytes(state, bytes, t);
}

void run_rmsnorm(benchmark::State& state, int64_t R, int64_t d, bool backward) {
  const double rd = double(R * d);
  const double bytes = backward ? 6 * rd + 4.0 * double(R) + 8.0 * double(d)
                                : 4 * rd + 4.0 * double(R) + 4.0 * double(d);
  const int sets = rotation_sets(bytes);
  Rotating<bf16> x(size_t(R * d), sets), y(size_t(R * d), sets);
  Rotating<float> w(size_t(d), sets), rstd(size_t(R), sets);
  fill_normal(x, 1);
  fill_normal(w, 2, 1.0f, 0.1f);
  for (int s = 0; s < sets; ++s)
    cuda::rmsnorm_forward(y[s], rstd[s], x[s], w[s], R, d, 1e-5, stream());
  Timing t;
  if (!backward) {
    t = time_launches(state, [&](int64_t i) {
      cuda::rmsnorm_forward(y[i], rstd[i], x[i], w[i], R, d, 1e-5, stream());
    });
  } else {
    Rotating<bf16> dx(size_t(R * d), sets);
    Rotating<float> dw(size_t(d), sets);
    fill_normal(y, 3);  // as dy
    t = time_launches(state, [&](int64_t i) {
      cuda::rmsnorm_backward(dx[i], dw[i], y[i], x[i], w[i], rstd[i], R, d, stream());
    });
  }
  report_bytes(state, bytes, t);
}

void register_all() {
  // The 182M config's linear layers at T = 8192 (wo has wq's shape), and the 978M config's FFN.
  const Linear linears[] = {
      {"182M", "wq", 8192, 768, 768},      {"182M", "wk", 8192, 256, 768},
      {"182M", "w1", 8192, 3072, 768},     {"182M", "w2", 8192, 768, 3072},
      {"182M", "lm_head", 8192, 256, 768}, {"978M", "w1", 8192, 6144, 1536},
      {"978M", "w2", 8192, 1536, 6144},
  };
  for (const Linear& l : linears)
    for (bool bwd : {false, true}) {
      if (bwd && std::string(l.layer) != "w1" && std::string(l.layer) != "w2") continue;
      add(shape_name(bwd ? "matmul_backward" : "matmul_forward",
                     {{"cfg", l.config}, {"layer", l.layer}, {"M", num(l.M)}, {"N", num(l.N)},
                      {"K", num(l.K)}}),
          [l, bwd](benchmark::State& s) { run_matmul(s, l, bwd); });
    }
  const Attention attns[] = {{"182M", 8, 1024, 12, 4, 64}, {"469M", 8, 1024, 16, 4, 64},
                             {"978M", 8, 1024, 16, 4, 96}};
  for (const char* dtype : {"f32", "bf16"})
    for (const Attention& a : attns)
      for (bool bwd : {false, true}) {
        const bool half = std::string(dtype) == "bf16";
        add(shape_name(bwd ? "attention_backward" : "attention_forward",
                       {{"dtype", dtype}, {"cfg", a.config}, {"B", num(a.B)}, {"S", num(a.S)},
                        {"Hq", num(a.Hq)}, {"Hkv", num(a.Hkv)}, {"Dh", num(a.Dh)}}),
            [a, bwd, half](benchmark::State& s) {
              half ? run_attention<bf16>(s, a, bwd) : run_attention<float>(s, a, bwd);
            });
      }
  // Vocabulary 256 is remoe's (bytes); 50304 is a padded GPT-2 vocabulary (the paper's data).
  const std::pair<int64_t, int64_t> ce[] = {{8192, 256}, {65536, 256}, {8192, 50304}};
  for (const auto& tv : ce)
    for (bool bwd : {false, true}) {
      const int64_t T = tv.first, V = tv.second;
      add(shape_name(bwd ? "cross_entropy_backward" : "cross_entropy_forward",
                     {{"T", num(T)}, {"V", num(V)}}),
          [T, V, bwd](benchmark::State& s) { run_cross_entropy(s, T, V, bwd); });
    }
  const std::pair<int64_t, int64_t> norms[] = {{8192, 768}, {8192, 1536}, {65536, 768}, {65536, 1536}};
  for (const auto& rd : norms)
    for (bool bwd : {false, true}) {
      const int64_t R = rd.first, d = rd.second;
      add(shape_name(bwd ? "rmsnorm_backward" : "rmsnorm_forward",
                     {{"dtype", "bf16"}, {"rows", num(R)}, {"d", num(d)}}),
          [R, d, bwd](benchmark::State& s) { run_rmsnorm(s, R, d, bwd); });
    }
}

}  // namespace
}  // namespace remoe::bench

int main(int argc, char** argv) { return remoe::bench::run_main(argc, argv, remoe::bench::register_all); }
