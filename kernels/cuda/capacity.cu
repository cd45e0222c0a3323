// Capacity with token dropping on the GPU (contract in kernels/capacity.h), f32 and f64.
//   gates, scores, gates_out, dgates, dgates_out: (T, E) T-typed; mask, kept: (T, E) i32;
//   expert_counts (E), token_counts (T), nonzero (1) i32.
//
// Forward: the per-expert selection of cuda/expert_select.cuh — one block per expert; by
// probability a radix select of the capacity-th largest score (ties: the lower token index, in
// an ordered pass over the column), by position the first `capacity` routed tokens (the same
// ordered pass) — then the token counts and nonzero from the kept mask. Only integer sums, so
// the result is the CPU's bit for bit.
// Backward: elementwise, dgates = kept ? dgates_out : 0.
#include <cuda_runtime.h>

#include "kernels/capacity.h"
#include "kernels/check.h"
#include "kernels/cuda/expert_select.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void capacity_backward_kernel(T* dgates, const T* dgates_out, const int32_t* kept,
                                         int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dgates[i] = kept[i] ? dgates_out[i] : T(0);
}

}  // namespace

template <typename T>
void capacity_drop_forward(T* gates_out, int32_t* kept, int32_t* expert_counts,
                           int32_t* token_counts, int32_t* nonzero, const T* gates,
                           const int32_t* mask, const T* scores, int64_t n_tokens,
                           int64_t n_experts, int64_t capacity, bool by_position,
                           cudaStream_t stream) {
  NvtxRange range("capacity_drop_forward");
  REMOE_CHECK(n_tokens >= 0 && n_experts >= 0, "capacity_drop_forward: negative size (T ", n_tokens,
              ", E ", n_experts, ")");
  REMOE_CHECK(n_tokens * n_experts < (int64_t(1) << 31),
              "capacity_drop_forward: T·E = ", n_tokens * n_experts,
              " does not fit the i32 counts");
  REMOE_CHECK(capacity >= 0, "capacity_drop_forward: capacity must be >= 0, got ", capacity);
  select_per_expert(kept, gates_out, expert_counts, token_counts, nonzero, gates, mask, scores,
                    n_tokens, n_experts, capacity, by_position, stream);
}

template <typename T>
void capacity_drop_backward(T* dgates, const T* dgates_out, const int32_t* kept, int64_t n,
                            cudaStream_t stream) {
  NvtxRange range("capacity_drop_backward");
  REMOE_CHECK(n >= 0, "capacity_drop_backward: negative size ", n);
  if (n == 0) return;
  capacity_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dgates, dgates_out, kept,
                                                                           n);
  CUDA_CHECK(cudaGetLastError());
}

#define REMOE_INSTANTIATE(T)                                                                   \
  template void capacity_drop_forward<T>(T*, int32_t*, int32_t*, int32_t*, int32_t*, const T*, \
                                         const int32_t*, const T*, int64_t, int64_t, int64_t,  \
                                         bool, cudaStream_t);                                  \
  template void capacity_drop_backward<T>(T*, const T*, const int32_t*, int64_t, cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(double)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
