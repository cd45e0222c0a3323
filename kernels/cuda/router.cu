// Routers on the GPU (contracts in kernels/router.h), f32 and f64.
//   logits, gates, probs, dlogits, dgates, dprobs: (T, E) T-typed; mask: (T, E) i32;
//   expert_counts (E) i32, score_sums (E) T, token_counts (T) i32, nonzero (1) i32.
//
// Forward, both routers: one block per kTokensPerBlock tokens writes its rows (gates, mask,
// probs, token_counts) and one partial per expert — Σ score in double and Σ mask over its
// tokens — to a scratch (n_blocks, E); then one block sums the partials over blocks in block
// order. No float atomics anywhere, so the statistics are the same bits on every run.
//   ReLU: lanes own experts (e = e0 + lane), warps own tokens; any E.
//   Top-k: one warp holds a token's whole row in registers (E ≤ kTopkMaxExperts), finds the
//   max, the softmax and then the k winners by k warp arg-max reductions over (score desc,
//   e asc), the CPU's order, so ties go to the lower expert index. The score is p, or p + bias[e]
//   with a selection bias (bias (E), T-typed, nullable); the winner's unbiased p rides along
//   the reduction for the gate and the renormalising sum.
// Backward: ReLU is elementwise; top-k is one warp per token with the sums in double.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/router.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTokensPerBlock = 64;
constexpr int kTopkPerLane = int(kTopkMaxExperts) / 32;
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kTopkMaxExperts % 32 == 0, "a top-k row is split evenly over the 32 lanes");

__device__ float exp_of(float x) { return expf(x); }
__device__ double exp_of(double x) { return exp(x); }

// Butterfly sums: lane i adds x_i + x_{i^m} and lane i^m adds x_{i^m} + x_i, the same bits, so
// every lane ends with the same value.
template <typename A>
__device__ A warp_sum(A x) {
  for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(kFullMask, x, m);
  return x;
}

template <typename A>
__device__ A warp_max(A x) {
  for (int m = 16; m > 0; m >>= 1) x = max(x, __shfl_xor_sync(kFullMask, x, m));
  return x;
}

template <typename T>
__global__ void relu_route_kernel(T* gates, int32_t* mask, int32_t* token_counts,
                                  double* part_sums, int32_t* part_counts, const T* logits,
                                  int64_t n_tokens, int64_t n_experts) {
  __shared__ double s_sum[kWarps][32];
  __shared__ int32_t s_cnt[kWarps][32];
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t t_begin = int64_t(blockIdx.x) * kTokensPerBlock;
  const int64_t t_end = min(t_begin + kTokensPerBlock, n_tokens);
  for (int64_t e0 = 0; e0 < n_experts; e0 += 32) {
    const int64_t e = e0 + lane;
    double sum = 0;
    int32_t count = 0;
    for (int64_t t = t_begin + warp; t < t_end; t += kWarps) {  // warp-uniform bounds
      bool on = false;
      if (e < n_experts) {
        const int64_t i = t * n_experts + e;
        const T z = logits[i];
        on = z > T(0);  // NOTE: false for NaN, like the CPU
        const T g = on ? z : T(0);
        gates[i] = g;
        mask[i] = on ? 1 : 0;
        sum += double(g);
        count += on ? 1 : 0;
      }
      const int active = __popc(__ballot_sync(kFullMask, on));
      // The same lane wrote this token's count for the previous expert chunk: no race.
      if (lane == 0) token_counts[t] = (e0 == 0 ? 0 : token_counts[t]) + active;
    }
    s_sum[warp][lane] = sum;
    s_cnt[warp][lane] = count;
    __syncthreads();
    if (warp == 0 && e < n_experts) {
      double s = 0;
      int32_t c = 0;
      for (int w = 0; w < kWarps; ++w) {
        s += s_sum[w][lane];
        c += s_cnt[w][lane];
      }
      part_sums[int64_t(blockIdx.x) * n_experts + e] = s;
      part_counts[int64_t(blockIdx.x) * n_experts + e] = c;
    }
    __syncthreads();  // s_sum is rewritten by the next chunk
  }
}

template <typename T>
__global__ void topk_route_kernel(T* gates, T* probs, int32_t* mask, int32_t* token_counts,
                                  double* part_sums, int32_t* part_counts, const T* logits,
                                  const T* bias, int64_t n_tokens, int n_experts, int k,
                                  bool renormalize) {
  __shared__ double s_sum[kWarps][kTopkMaxExperts];
  __shared__ int32_t s_cnt[kWarps][kTopkMaxExperts];
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t t_begin = int64_t(blockIdx.x) * kTokensPerBlock;
  const int64_t t_end = min(t_begin + kTokensPerBlock, n_tokens);
  double acc_sum[kTopkPerLane];
  int32_t acc_cnt[kTopkPerLane];
#pragma unroll
  for (int j = 0; j < kTopkPerLane; ++j) {
    acc_sum[j] = 0;
    acc_cnt[j] = 0;
  }

  for (int64_t t = t_begin + warp; t < t_end; t += kWarps) {
    const T* z = logits + t * n_experts;
    T p[kTopkPerLane];
    T z_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      p[j] = e < n_experts ? z[e] : T(0);
      if (e < n_experts) z_max = max(z_max, p[j]);
    }
    z_max = warp_max(z_max);
    T sum = 0;
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j)
      if (lane + 32 * j < n_experts) {
        p[j] = exp_of(p[j] - z_max);
        sum += p[j];
      }
    sum = warp_sum(sum);
    // The selection score: p, or p + bias[e] (the CPU's sum, in T).
    T score[kTopkPerLane];
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e < n_experts) p[j] /= sum;
      score[j] = e < n_experts && bias ? p[j] + bias[e] : p[j];
    }

    // k rounds of arg-max over the unselected; (score desc, e asc) is a total order, so the
    // butterfly leaves every lane with the same winner, and with it the winner's p.
    unsigned selected = 0;  // bit j: expert lane + 32·j is selected
    T selected_sum = 0;     // Σ p of the selected, in selection order, like the CPU
    for (int round = 0; round < k; ++round) {
      T best = 0, best_p = 0;
      int best_e = INT_MAX;  // INT_MAX: nothing left on this lane
#pragma unroll
      for (int j = 0; j < kTopkPerLane; ++j) {
        const int e = lane + 32 * j;
        // j ascending is e ascending: strict > keeps the lower index on ties.
        if (e < n_experts && !((selected >> j) & 1u) && (best_e == INT_MAX || score[j] > best)) {
          best = score[j];
          best_p = p[j];
          best_e = e;
        }
      }
      for (int m = 16; m > 0; m >>= 1) {
        const T other = __shfl_xor_sync(kFullMask, best, m);
        const T other_p = __shfl_xor_sync(kFullMask, best_p, m);
        const int other_e = __shfl_xor_sync(kFullMask, best_e, m);
        if (other_e != INT_MAX &&
            (best_e == INT_MAX || other > best || (other == best && other_e < best_e))) {
          best = other;
          best_p = other_p;
          best_e = other_e;
        }
      }
      if (best_e % 32 == lane) selected |= 1u << (best_e / 32);
      selected_sum += best_p;
    }

#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e >= n_experts) continue;
      const bool on = (selected >> j) & 1u;
      const int64_t i = t * n_experts + e;
      probs[i] = p[j];
      gates[i] = on ? (renormalize ? p[j] / selected_sum : p[j]) : T(0);
      mask[i] = on ? 1 : 0;
      acc_sum[j] += double(p[j]);
      acc_cnt[j] += on ? 1 : 0;
    }
    if (lane == 0) token_counts[t] = k;
  }

#pragma unroll
  for (int j = 0; j < kTopkPerLane; ++j) {
    const int e = lane + 32 * j;
    if (e < n_experts) {
      s_sum[warp][e] = acc_sum[j];
      s_cnt[warp][e] = acc_cnt[j];
    }
  }
  __syncthreads();
  for (int e = int(threadIdx.x); e < n_experts; e += kThreads) {
    double s = 0;
    int32_t c = 0;
    for (int w = 0; w < kWarps; ++w) {
      s += s_sum[w][e];
      c += s_cnt[w][e];
    }
    part_sums[int64_t(blockIdx.x) * n_experts + e] = s;
    part_counts[int64_t(blockIdx.x) * n_experts + e] = c;
  }
}

// One block: expert e's statistics are its partials summed in block order.
template <typename T>
__global__ void finish_stats_kernel(int32_t* expert_counts, T* score_sums, int32_t* nonzero,
                                    const double* part_sums, const int32_t* part_counts,
                                    int64_t n_parts, int64_t n_experts) {
  __shared__ unsigned long long s_total;
  if (threadIdx.x == 0) s_total = 0;
  __syncthreads();
  unsigned long long local = 0;
  for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x) {
    double s = 0;
    int64_t c = 0;
    for (int64_t b = 0; b < n_parts; ++b) {
      s += part_sums[b * n_experts + e];
      c += part_counts[b * n_experts + e];
    }
    score_sums[e] = T(s);
    expert_counts[e] = int32_t(c);
    local += static_cast<unsigned long long>(c);
  }
  atomicAdd(&s_total, local);  // integers: the order cannot change the result
  __syncthreads();
  if (threadIdx.x == 0) *nonzero = int32_t(s_total);
}

template <typename T>
__global__ void relu_backward_kernel(T* dlogits, const T* dgates, const T* logits, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dlogits[i] = logits[i] > T(0) ? dgates[i] : T(0);
}

template <typename T>
__global__ void topk_backward_kernel(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                                     const int32_t* mask, int64_t n_tokens, int n_experts,
                                     bool renormalize) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t t = first; t < n_tokens; t += stride) {  // warp-uniform
    const int64_t row = t * n_experts;
    double p[kTopkPerLane], dp[kTopkPerLane], dg[kTopkPerLane];
    bool on[kTopkPerLane];
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      const bool in = e < n_experts;
      p[j] = in ? double(probs[row + e]) : 0.0;
      on[j] = in && mask[row + e] != 0;
      dp[j] = in && dprobs ? double(dprobs[row + e]) : 0.0;
      dg[j] = in && dgates ? double(dgates[row + e]) : 0.0;
    }
    if (dgates) {
      if (!renormalize) {
#pragma unroll
        for (int j = 0; j < kTopkPerLane; ++j)
          if (on[j]) dp[j] += dg[j];
      } else {
        // g_j = p_j / S over the selected, S = Σ_sel p: dp_i = (dg_i − Σ_sel dg_j g_j) / S.
        double s = 0;
#pragma unroll
        for (int j = 0; j < kTopkPerLane; ++j)
          if (on[j]) s += p[j];
        s = warp_sum(s);
        double dg_dot_g = 0;
#pragma unroll
        for (int j = 0; j < kTopkPerLane; ++j)
          if (on[j]) dg_dot_g += dg[j] * p[j] / s;
        dg_dot_g = warp_sum(dg_dot_g);
#pragma unroll
        for (int j = 0; j < kTopkPerLane; ++j)
          if (on[j]) dp[j] += (dg[j] - dg_dot_g) / s;
      }
    }
    double p_dot_dp = 0;
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) p_dot_dp += p[j] * dp[j];
    p_dot_dp = warp_sum(p_dot_dp);
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e < n_experts) dlogits[row + e] = T(p[j] * (dp[j] - p_dot_dp));
    }
  }
}

void check_sizes(const char* op, int64_t n_tokens, int64_t n_experts) {
  REMOE_CHECK(n_tokens >= 0 && n_experts >= 0, op, ": negative size (T ", n_tokens, ", E ",
              n_experts, ")");
  REMOE_CHECK(n_tokens * n_experts < (int64_t(1) << 31), op, ": T·E = ", n_tokens * n_experts,
              " does not fit the i32 counts");
}

// Scratch for (n_blocks, E) partials: sums (double) then counts (i32).
struct Partials {
  Scratch scratch;
  double* sums;
  int32_t* counts;
  Partials(int64_t n, cudaStream_t stream)
      : scratch(scratch_align(size_t(n) * sizeof(double)) + size_t(n) * sizeof(int32_t), stream),
        sums(n > 0 ? scratch.as<double>() : nullptr),
        counts(n > 0 ? scratch.as<int32_t>(scratch_align(size_t(n) * sizeof(double))) : nullptr) {}
};

template <typename T>
void finish_stats(RouterStats<T> stats, const Partials& part, int64_t n_parts, int64_t n_experts,
                  cudaStream_t stream) {
  // One block even when T = 0: the counts, sums and nonzero are still written (as 0).
  finish_stats_kernel<<<1, kThreads, 0, stream>>>(stats.expert_counts, stats.score_sums,
                                                  stats.nonzero, part.sums, part.counts, n_parts,
                                                  n_experts);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <typename T>
void relu_router_forward(T* gates, RouterStats<T> stats, const T* logits, int64_t n_tokens,
                         int64_t n_experts, cudaStream_t stream) {
  NvtxRange range("relu_router_forward");
  check_sizes("relu_router_forward", n_tokens, n_experts);
  const int64_t n_blocks = n_experts > 0 ? (n_tokens + kTokensPerBlock - 1) / kTokensPerBlock : 0;
  Partials part(n_blocks * n_experts, stream);
  if (n_blocks > 0) {
    relu_route_kernel<<<unsigned(n_blocks), kThreads, 0, stream>>>(
        gates, stats.mask, stats.token_counts, part.sums, part.counts, logits, n_tokens,
        n_experts);
    CUDA_CHECK(cudaGetLastError());
  } else if (n_tokens > 0) {  // E = 0: no expert is active for any token
    CUDA_CHECK(cudaMemsetAsync(stats.token_counts, 0, size_t(n_tokens) * sizeof(int32_t), stream));
  }
  finish_stats(stats, part, n_blocks, n_experts, stream);
}

template <typename T>
void relu_router_backward(T* dlogits, const T* dgates, const T* logits, int64_t n_tokens,
                          int64_t n_experts, cudaStream_t stream) {
  NvtxRange range("relu_router_backward");
  check_sizes("relu_router_backward", n_tokens, n_experts);
  const int64_t n = n_tokens * n_experts;
  if (n == 0) return;
  relu_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dlogits, dgates, logits, n);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void topk_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                         int64_t n_tokens, int64_t n_experts, int k, bool renormalize,
                         const T* bias, cudaStream_t stream) {
  NvtxRange range("topk_router_forward");
  check_sizes("topk_router_forward", n_tokens, n_experts);
  REMOE_CHECK(n_experts >= 1 && n_experts <= kTopkMaxExperts, "topk_router_forward: E = ",
              n_experts, " outside [1, ", kTopkMaxExperts, "] (one warp holds a row)");
  REMOE_CHECK(k >= 1 && k <= n_experts, "topk_router_forward: k = ", k, " outside [1, E = ",
              n_experts, "]");
  const int64_t n_blocks = (n_tokens + kTokensPerBlock - 1) / kTokensPerBlock;
  Partials part(n_blocks * n_experts, stream);
  if (n_blocks > 0) {
    topk_route_kernel<<<unsigned(n_blocks), kThreads, 0, stream>>>(
        gates, probs, stats.mask, stats.token_counts, part.sums, part.counts, logits, bias,
        n_tokens, int(n_experts), k, renormalize);
    CUDA_CHECK(cudaGetLastError());
  }
  finish_stats(stats, part, n_blocks, n_experts, stream);
}

template <typename T>
void topk_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                          const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                          bool renormalize, cudaStream_t stream) {
  NvtxRange range("topk_router_backward");
  check_sizes("topk_router_backward", n_tokens, n_experts);
  REMOE_CHECK(n_experts >= 1 && n_experts <= kTopkMaxExperts, "topk_router_backward: E = ",
              n_experts, " outside [1, ", kTopkMaxExperts, "]");
  if (n_tokens == 0) return;
  topk_backward_kernel<<<grid_for(n_tokens, kWarps), kThreads, 0, stream>>>(
      dlogits, dgates, dprobs, probs, mask, n_tokens, int(n_experts), renormalize);
  CUDA_CHECK(cudaGetLastError());
}

#define REMOE_INSTANTIATE(T)                                                                    \
  template void relu_router_forward<T>(T*, RouterStats<T>, const T*, int64_t, int64_t,           \
                                       cudaStream_t);                                           \
  template void relu_router_backward<T>(T*, const T*, const T*, int64_t, int64_t, cudaStream_t); \
  template void topk_router_forward<T>(T*, T*, RouterStats<T>, const T*, int64_t, int64_t, int,  \
                                       bool, const T*, cudaStream_t);                           \
  template void topk_router_backward<T>(T*, const T*, const T*, const T*, const int32_t*,        \
                                        int64_t, int64_t, bool, cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(double)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
