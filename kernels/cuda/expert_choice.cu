// Expert-choice routing on the GPU (contract in kernels/expert_choice.h), f32 and f64.
//   logits, probs, gates, dlogits, dgates, dprobs: (T, E) T-typed; mask: (T, E) i32;
//   expert_counts (E) i32, score_sums (E) T, token_counts (T) i32, nonzero (1) i32.
//
// Forward, in four steps on the stream:
//   1. softmax: one warp per token, any E (the row in three strided passes: max, Σ exp, p).
//   2. the choice: cuda/expert_select.cuh with every pair routed — one block per expert, a
//      radix select of the capacity-th largest p and an ordered pass over the column that
//      breaks ties by the lower token index — which writes mask, gates = p ⊙ mask,
//      expert_counts, token_counts and nonzero.
//   3. score_sums = Σ_t p[t, e]: per-block partials over kSumTokens tokens each, in token order
//      in double, then one block over the partials in block order (fixed order, no atomics).
// Backward: cuda::topk_router_backward without renormalisation (the CPU's rule).
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/check.h"
#include "kernels/cuda/expert_select.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/expert_choice.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kSumTokens = 64;  // tokens per partial of score_sums
constexpr unsigned kFullMask = 0xffffffffu;

__device__ float exp_of(float x) { return expf(x); }
__device__ double exp_of(double x) { return exp(x); }

// probs[t] = softmax(logits[t]) in T, as the CPU: max, then exp(z − max), then / Σ.
template <typename T>
__global__ void softmax_rows_kernel(T* probs, const T* logits, int64_t n_tokens,
                                    int64_t n_experts) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t t = first; t < n_tokens; t += stride) {  // warp-uniform
    const T* z = logits + t * n_experts;
    T* p = probs + t * n_experts;
    T z_max = -INFINITY;
    for (int64_t e = lane; e < n_experts; e += 32) z_max = max(z_max, z[e]);
    for (int m = 16; m > 0; m >>= 1) z_max = max(z_max, __shfl_xor_sync(kFullMask, z_max, m));
    T sum = 0;
    for (int64_t e = lane; e < n_experts; e += 32) sum += exp_of(z[e] - z_max);
    for (int m = 16; m > 0; m >>= 1) sum += __shfl_xor_sync(kFullMask, sum, m);
    for (int64_t e = lane; e < n_experts; e += 32) p[e] = exp_of(z[e] - z_max) / sum;
  }
}

// part[b, e] = Σ_{t in block b's kSumTokens tokens} x[t, e], in token order, in double.
template <typename T>
__global__ void column_partials_kernel(double* part, const T* x, int64_t n_tokens,
                                       int64_t n_experts) {
  const int64_t t_begin = int64_t(blockIdx.x) * kSumTokens;
  const int64_t t_end = min(t_begin + kSumTokens, n_tokens);
  for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x) {
    double s = 0;
    for (int64_t t = t_begin; t < t_end; ++t) s += double(x[t * n_experts + e]);
    part[int64_t(blockIdx.x) * n_experts + e] = s;
  }
}

// One block: out[e] = Σ_b part[b, e] in block order (0 when there are no partials).
template <typename T>
__global__ void finish_columns_kernel(T* out, const double* part, int64_t n_parts,
                                      int64_t n_experts) {
  for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x) {
    double s = 0;
    for (int64_t b = 0; b < n_parts; ++b) s += part[b * n_experts + e];
    out[e] = T(s);
  }
}

}  // namespace

template <typename T>
void expert_choice_router_forward(T* gates, T* probs, RouterStats<T> stats, const T* logits,
                                  int64_t n_tokens, int64_t n_experts, int64_t capacity,
                                  cudaStream_t stream) {
  NvtxRange range("expert_choice_router_forward");
  REMOE_CHECK(n_tokens >= 0 && n_experts >= 1,
              "expert_choice_router_forward: needs T >= 0 and "
              "E >= 1, got T = ",
              n_tokens, ", E = ", n_experts);
  REMOE_CHECK(n_tokens * n_experts < (int64_t(1) << 31),
              "expert_choice_router_forward: T·E = ", n_tokens * n_experts,
              " does not fit the i32 counts");
  REMOE_CHECK(capacity >= 0, "expert_choice_router_forward: capacity must be >= 0, got ", capacity);
  if (n_tokens > 0) {
    softmax_rows_kernel<T>
        <<<grid_for(n_tokens, kWarps), kThreads, 0, stream>>>(probs, logits, n_tokens, n_experts);
    CUDA_CHECK(cudaGetLastError());
  }
  // Every pair is routed (mask null); gates = probs on the chosen pairs.
  select_per_expert<T>(stats.mask, gates, stats.expert_counts, stats.token_counts, stats.nonzero,
                       probs, static_cast<const int32_t*>(nullptr), probs, n_tokens, n_experts,
                       capacity, false, stream);

  const int64_t n_parts = (n_tokens + kSumTokens - 1) / kSumTokens;
  Scratch scratch(size_t(n_parts * n_experts) * sizeof(double), stream);
  double* part = n_parts > 0 ? scratch.as<double>() : nullptr;
  if (n_parts > 0) {
    column_partials_kernel<T>
        <<<unsigned(n_parts), kThreads, 0, stream>>>(part, probs, n_tokens, n_experts);
    CUDA_CHECK(cudaGetLastError());
  }
  finish_columns_kernel<T><<<1, kThreads, 0, stream>>>(stats.score_sums, part, n_parts, n_experts);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void expert_choice_router_backward(T* dlogits, const T* dgates, const T* dprobs, const T* probs,
                                   const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                                   cudaStream_t stream) {
  NvtxRange range("expert_choice_router_backward");
  // gate = p on the taken pairs: raw-probability top-k's rule, whatever chose the pairs.
  topk_router_backward<T>(dlogits, dgates, dprobs, probs, mask, n_tokens, n_experts, false, stream);
}

#define REMOE_INSTANTIATE(T)                                                                       \
  template void expert_choice_router_forward<T>(T*, T*, RouterStats<T>, const T*, int64_t,         \
                                                int64_t, int64_t, cudaStream_t);                   \
  template void expert_choice_router_backward<T>(T*, const T*, const T*, const T*, const int32_t*, \
                                                 int64_t, int64_t, cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(double)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
