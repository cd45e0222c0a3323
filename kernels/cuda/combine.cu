// Weighted combine on the GPU (contracts in kernels/combine.h).
//   expert_out, dexpert_out: (N, d) T; gates, dgates: (T, E) f32; row_of: (T, E) i32;
//   y, dy: (T, d) T; T in {f32, bf16}, arithmetic in fp32.
//
// One block per token, threads over the feature dimension. Forward: y[t, j] sums the active
// experts' rows in ascending e — every output written by one thread, no atomics. Backward:
// for each active pair the block writes the scaled row gates·dy[t] and reduces <dy[t], row>
// (per-thread partials, a warp butterfly, then the warps in order): fixed order, so dgates
// repeats bit for bit.
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/combine.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxGrid = 65535;

template <typename D>
__global__ void combine_forward_kernel(D* y, const D* expert_out, const float* gates,
                                       const int32_t* row_of, int64_t n_tokens,
                                       int64_t n_experts, int64_t dim) {
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    const int32_t* rows = row_of + t * n_experts;
    const float* g = gates + t * n_experts;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      float acc = 0;
      for (int64_t e = 0; e < n_experts; ++e) {
        const int32_t row = rows[e];
        if (row >= 0) acc += g[e] * load_acc(expert_out[int64_t(row) * dim + j]);
      }
      y[t * dim + j] = store_as<D>(acc);
    }
  }
}

template <typename D>
__global__ void combine_backward_kernel(D* dexpert_out, float* dgates, const D* dy,
                                        const D* expert_out, const float* gates,
                                        const int32_t* row_of, int64_t n_tokens,
                                        int64_t n_experts, int64_t dim) {
  __shared__ float s_part[kWarps];
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {  // block-uniform
    const D* dy_row = dy + t * dim;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int64_t pair = t * n_experts + e;
      const int32_t row = row_of[pair];  // block-uniform
      if (row < 0) {
        if (dgates && threadIdx.x == 0) dgates[pair] = 0;
        continue;
      }
      if (dexpert_out) {
        const float g = gates[pair];
        D* dst = dexpert_out + int64_t(row) * dim;
        for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
          dst[j] = store_as<D>(g * load_acc(dy_row[j]));
      }
      if (dgates) {
        const D* src = expert_out + int64_t(row) * dim;
        float part = 0;
        for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
          part += load_acc(dy_row[j]) * load_acc(src[j]);
        for (int m = 16; m > 0; m >>= 1) part += __shfl_xor_sync(0xffffffffu, part, m);
        if (lane == 0) s_part[warp] = part;
        __syncthreads();
        if (threadIdx.x == 0) {
          float s = 0;
          for (int w = 0; w < kWarps; ++w) s += s_part[w];
          dgates[pair] = s;
        }
        __syncthreads();  // s_part is reused by the next pair
      }
    }
  }
}

unsigned grid_for(int64_t n) { return unsigned(n < kMaxGrid ? n : kMaxGrid); }

}  // namespace

template <typename T>
void combine_forward(T* y, const T* expert_out, const float* gates, const int32_t* row_of,
                     int64_t n_tokens, int64_t n_experts, int64_t dim, cudaStream_t stream) {
  NvtxRange range("combine_forward");
  if (n_tokens == 0 || dim == 0) return;
  combine_forward_kernel<<<grid_for(n_tokens), kThreads, 0, stream>>>(
      dev(y), dev(expert_out), gates, row_of, n_tokens, n_experts, dim);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void combine_backward(T* dexpert_out, float* dgates, const T* dy, const T* expert_out,
                      const float* gates, const int32_t* row_of, int64_t n_tokens,
                      int64_t n_experts, int64_t dim, int64_t n_rows, cudaStream_t stream) {
  NvtxRange range("combine_backward");
  // Zero bits are 0.0 in f32 and bf16; rows no pair maps to stay 0, like the CPU.
  if (dexpert_out && n_rows * dim > 0)
    CUDA_CHECK(cudaMemsetAsync(dexpert_out, 0, size_t(n_rows * dim) * sizeof(T), stream));
  if (n_tokens == 0 || n_experts == 0 || (!dexpert_out && !dgates)) return;
  // dim = 0 still launches: dgates of active pairs are empty dot products, 0.
  combine_backward_kernel<<<grid_for(n_tokens), kThreads, 0, stream>>>(
      dev(dexpert_out), dgates, dev(dy), dev(expert_out), gates, row_of, n_tokens,
      n_experts, dim);
  CUDA_CHECK(cudaGetLastError());
}

#define REMOE_INSTANTIATE(T)                                                                    \
  template void combine_forward<T>(T*, const T*, const float*, const int32_t*, int64_t, int64_t, \
                                   int64_t, cudaStream_t);                                      \
  template void combine_backward<T>(T*, float*, const T*, const T*, const float*,                \
                                    const int32_t*, int64_t, int64_t, int64_t, int64_t,          \
                                    cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(bf16)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
