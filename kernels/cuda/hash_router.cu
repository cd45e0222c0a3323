// Hash routing on the GPU (contract in kernels/hash_router.h), f32 and f64.
//   ids: (T) i32; gates: (T, E) T-typed; mask: (T, E) i32; expert_counts (E) i32,
//   score_sums (E) T, token_counts (T) i32, nonzero (1) i32.
//
// Three kernels: gates and mask elementwise over (t, e) (e is routed when (e − first) mod E < k,
// first = splitmix64(id) mod E, the CPU's cpu::hash_token, called on the device through
// --expt-relaxed-constexpr); then per token token_counts = k and a per-block histogram of the
// k experts in shared memory, added to expert_counts (zeroed first) with one integer atomic per
// block and expert — counts, so the order of the atomics cannot matter; then one block writes
// score_sums = gate · count (the CPU's T expression) and nonzero = T · k. The gate 1/k is
// computed on the host in T, so every output is the CPU's bit for bit.
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/hash_router.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kThreads = 256;
// Experts a block's histogram holds in shared memory (32 KiB); beyond it the block adds
// straight to expert_counts in global memory.
constexpr int64_t kSharedHistExperts = 8192;

__device__ __forceinline__ uint64_t first_expert(int32_t id, int64_t n_experts) {
  // (the id as unsigned 32 bits, as on the CPU)
  return cpu::hash_token(uint64_t(uint32_t(id))) % uint64_t(n_experts);
}

template <typename T>
__global__ void hash_route_kernel(T* gates, int32_t* mask, const int32_t* ids, int64_t n_tokens,
                                  int64_t n_experts, int k, T gate) {
  const int64_t n = n_tokens * n_experts;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / n_experts, e = i % n_experts;
    const uint64_t first = first_expert(ids[t], n_experts);
    // e is one of first, first + 1, …, first + k − 1 (mod E), k ≤ E.
    const uint64_t offset = (uint64_t(e) + uint64_t(n_experts) - first) % uint64_t(n_experts);
    const bool on = offset < uint64_t(k);
    gates[i] = on ? gate : T(0);
    mask[i] = on ? 1 : 0;
  }
}

// expert_counts must be zero on entry. Dynamic shared memory: min(E, kSharedHistExperts) ints.
__global__ void hash_counts_kernel(int32_t* expert_counts, int32_t* token_counts,
                                   const int32_t* ids, int64_t n_tokens, int64_t n_experts, int k) {
  extern __shared__ int32_t s_hist[];
  const bool in_shared = n_experts <= kSharedHistExperts;
  int32_t* hist = in_shared ? s_hist : expert_counts;
  if (in_shared)
    for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x) s_hist[e] = 0;
  __syncthreads();
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n_tokens;
       t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t first = first_expert(ids[t], n_experts);
    for (int i = 0; i < k; ++i) atomicAdd(&hist[(first + uint64_t(i)) % uint64_t(n_experts)], 1);
    token_counts[t] = k;
  }
  __syncthreads();
  if (in_shared)
    for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x)
      if (s_hist[e] != 0) atomicAdd(&expert_counts[e], s_hist[e]);
}

template <typename T>
__global__ void hash_finish_kernel(T* score_sums, int32_t* nonzero, const int32_t* expert_counts,
                                   int64_t n_experts, T gate, int32_t total) {
  for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x)
    score_sums[e] = gate * T(expert_counts[e]);
  if (threadIdx.x == 0) *nonzero = total;
}

}  // namespace

template <typename T>
void hash_router_forward(T* gates, RouterStats<T> stats, const int32_t* ids, int64_t n_tokens,
                         int64_t n_experts, int k, cudaStream_t stream) {
  NvtxRange range("hash_router_forward");
  REMOE_CHECK(n_tokens >= 0, "hash_router_forward: negative T = ", n_tokens);
  REMOE_CHECK(n_experts >= 1 && k >= 1 && k <= n_experts, "hash_router_forward: k = ", k,
              " must be in [1, E] with E = ", n_experts);
  REMOE_CHECK(n_tokens * n_experts < (int64_t(1) << 31),
              "hash_router_forward: T·E = ", n_tokens * n_experts, " does not fit the i32 counts");
  const T gate = T(1) / T(k);
  CUDA_CHECK(cudaMemsetAsync(stats.expert_counts, 0, size_t(n_experts) * sizeof(int32_t), stream));
  if (n_tokens > 0) {
    const int64_t n = n_tokens * n_experts;
    hash_route_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        gates, stats.mask, ids, n_tokens, n_experts, k, gate);
    CUDA_CHECK(cudaGetLastError());
    // Enough blocks to fill the GPU, few enough that the histogram flush stays small.
    const size_t hist_bytes =
        n_experts <= kSharedHistExperts ? size_t(n_experts) * sizeof(int32_t) : 0;
    hash_counts_kernel<<<grid_for(n_tokens, kThreads, 1024), kThreads, hist_bytes, stream>>>(
        stats.expert_counts, stats.token_counts, ids, n_tokens, n_experts, k);
    CUDA_CHECK(cudaGetLastError());
  }
  hash_finish_kernel<T><<<1, kThreads, 0, stream>>>(
      stats.score_sums, stats.nonzero, stats.expert_counts, n_experts, gate, int32_t(n_tokens * k));
  CUDA_CHECK(cudaGetLastError());
}

#define REMOE_INSTANTIATE(T)                                                                      \
  template void hash_router_forward<T>(T*, RouterStats<T>, const int32_t*, int64_t, int64_t, int, \
                                       cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(double)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
