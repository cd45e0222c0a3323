// MoE regularisers on the GPU (contracts in kernels/moe_loss.h), f32 and f64.
//   scores, dscores: (T, E); expert_counts: (E) i32; loss, dloss: (1), device memory.
//
// Forward: Σ_{t,e} w_e · s[t, e] (w_e = c_e for the balance loss, 1 for plain L1) in double,
// in two fixed-order steps: a fixed grid of blocks, each a grid-stride partial reduced by a
// warp butterfly and then its warps in order, and one block over the partials. The grid
// depends only on T·E, so a loss repeats bit for bit. The scale (coeff·E / (k·T²) or coeff / T)
// is computed on the host in the CPU's expression order.
// Backward: elementwise, dloss read on the device, the CPU's double expression.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/moe_loss.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxPartials = 1024;
constexpr int64_t kMaxGrid = 65535;

// Block-wide sum in a fixed order; the result is valid in thread 0. Ends with a barrier-free
// read, so a second call in the same kernel needs a __syncthreads() before it.
__device__ double block_sum(double x, double* s_warp) {
  for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
  if (threadIdx.x % 32 == 0) s_warp[threadIdx.x / 32] = x;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) total += s_warp[w];
  return total;
}

// counts == nullptr: every weight is 1 (plain L1).
template <typename T>
__global__ void weighted_partials_kernel(double* partials, const T* scores,
                                         const int32_t* counts, int64_t n, int64_t n_experts) {
  __shared__ double s_warp[kWarps];
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double w = counts ? double(counts[i % n_experts]) : 1.0;
    acc += w * double(scores[i]);
  }
  const double total = block_sum(acc, s_warp);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename T>
__global__ void finish_loss_kernel(T* loss, const double* partials, int64_t n_partials,
                                   double scale) {
  __shared__ double s_warp[kWarps];
  double acc = 0;
  for (int64_t b = threadIdx.x; b < n_partials; b += blockDim.x) acc += partials[b];
  const double total = block_sum(acc, s_warp);
  if (threadIdx.x == 0) *loss = T(scale * total);
}

template <typename T>
__global__ void load_balance_backward_kernel(T* dscores, const T* dloss,
                                             const int32_t* expert_counts, int64_t n,
                                             int64_t n_tokens, int64_t n_experts, double coeff,
                                             int k) {
  const double t = double(n_tokens);
  const double base = double(*dloss) * coeff * double(n_experts) / (double(k) * t * t);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dscores[i] = T(base * double(expert_counts[i % n_experts]));
}

template <typename T>
__global__ void l1_backward_kernel(T* dscores, const T* dloss, int64_t n, int64_t n_tokens,
                                   double coeff) {
  const T g = T(double(*dloss) * coeff / double(n_tokens));
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dscores[i] = g;
}

unsigned grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < kMaxGrid ? b : kMaxGrid);
}

void check_sizes(const char* op, int64_t n_tokens, int64_t n_experts) {
  REMOE_CHECK(n_tokens >= 0 && n_experts >= 0, op, ": negative size (T ", n_tokens, ", E ",
              n_experts, ")");
}

// loss = scale · Σ w_e s[t, e].
template <typename T>
void weighted_sum(T* loss, const T* scores, const int32_t* counts, int64_t n_tokens,
                  int64_t n_experts, double scale, cudaStream_t stream) {
  const int64_t n = n_tokens * n_experts;
  // Four elements per thread before the partials; the count depends on n only.
  const int64_t blocks = n == 0 ? 0 : std::min(kMaxPartials, (n + 4 * kThreads - 1) / (4 * kThreads));
  Scratch scratch(size_t(blocks) * sizeof(double), stream);
  double* partials = blocks > 0 ? scratch.as<double>() : nullptr;
  if (blocks > 0) {
    weighted_partials_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(partials, scores, counts,
                                                                        n, n_experts);
    CUDA_CHECK(cudaGetLastError());
  }
  finish_loss_kernel<<<1, kThreads, 0, stream>>>(loss, partials, blocks, scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <typename T>
void load_balance_loss_forward(T* loss, const T* scores, const int32_t* expert_counts,
                               int64_t n_tokens, int64_t n_experts, double coeff, int k,
                               cudaStream_t stream) {
  NvtxRange range("load_balance_loss_forward");
  check_sizes("load_balance_loss_forward", n_tokens, n_experts);
  if (n_tokens == 0) {  // 0 rather than 0/0; zero bits are 0.0
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(T), stream));
    return;
  }
  const double n = double(n_tokens);
  const double scale = coeff * double(n_experts) / (double(k) * n * n);
  weighted_sum(loss, scores, expert_counts, n_tokens, n_experts, scale, stream);
}

template <typename T>
void load_balance_loss_backward(T* dscores, const T* dloss, const int32_t* expert_counts,
                                int64_t n_tokens, int64_t n_experts, double coeff, int k,
                                cudaStream_t stream) {
  NvtxRange range("load_balance_loss_backward");
  check_sizes("load_balance_loss_backward", n_tokens, n_experts);
  const int64_t n = n_tokens * n_experts;
  if (n == 0) return;
  load_balance_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(
      dscores, dloss, expert_counts, n, n_tokens, n_experts, coeff, k);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void l1_loss_forward(T* loss, const T* scores, int64_t n_tokens, int64_t n_experts, double coeff,
                     cudaStream_t stream) {
  NvtxRange range("l1_loss_forward");
  check_sizes("l1_loss_forward", n_tokens, n_experts);
  if (n_tokens == 0) {
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(T), stream));
    return;
  }
  weighted_sum(loss, scores, static_cast<const int32_t*>(nullptr), n_tokens, n_experts,
               coeff / double(n_tokens), stream);
}

template <typename T>
void l1_loss_backward(T* dscores, const T* dloss, int64_t n_tokens, int64_t n_experts,
                      double coeff, cudaStream_t stream) {
  NvtxRange range("l1_loss_backward");
  check_sizes("l1_loss_backward", n_tokens, n_experts);
  const int64_t n = n_tokens * n_experts;
  if (n == 0) return;
  l1_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(dscores, dloss, n, n_tokens, coeff);
  CUDA_CHECK(cudaGetLastError());
}

#define REMOE_INSTANTIATE(T)                                                                     \
  template void load_balance_loss_forward<T>(T*, const T*, const int32_t*, int64_t, int64_t,      \
                                             double, int, cudaStream_t);                         \
  template void load_balance_loss_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t,     \
                                              double, int, cudaStream_t);                        \
  template void l1_loss_forward<T>(T*, const T*, int64_t, int64_t, double, cudaStream_t);         \
  template void l1_loss_backward<T>(T*, const T*, int64_t, int64_t, double, cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(double)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
