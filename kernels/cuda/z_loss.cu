// Router z-loss on the GPU (contract in kernels/z_loss.h), f32 and f64.
//   logits, dlogits: (T, E) T-typed; loss, dloss: (1) T, device memory.
//
// Forward: one warp per token computes lse_t = m + log Σ_e exp(z − m) in double (m the row's
// max; the Σ is a warp butterfly), and the warp adds lse_t² to its running sum. A fixed grid of
// blocks (its size depends on T only) each sums its warps in order into one partial; one block
// sums the partials in a fixed order and scales by coeff / T, the CPU's expression. No float
// atomics, so the loss repeats bit for bit.
// Backward: one warp per token recomputes lse_t and writes
//   dlogits[t, e] = dloss · coeff / T · 2 · lse_t · exp(z − lse_t), the CPU's double expression.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/z_loss.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxPartials = 1024;
constexpr unsigned kFullMask = 0xffffffffu;

// log Σ_e exp(z[e]) of one row, in double, in every lane of the warp.
template <typename T>
__device__ double warp_log_sum_exp(const T* z, int64_t n_experts, int lane) {
  double m = -INFINITY;
  for (int64_t e = lane; e < n_experts; e += 32) m = fmax(m, double(z[e]));
  for (int k = 16; k > 0; k >>= 1) m = fmax(m, __shfl_xor_sync(kFullMask, m, k));
  double s = 0;
  for (int64_t e = lane; e < n_experts; e += 32) s += exp(double(z[e]) - m);
  for (int k = 16; k > 0; k >>= 1) s += __shfl_xor_sync(kFullMask, s, k);
  return m + log(s);
}

// partials[b] = Σ lse_t² over the tokens of block b's warps (token t to warp t mod the grid's
// warps), the warps summed in order.
template <typename T>
__global__ void z_partials_kernel(double* partials, const T* logits, int64_t n_tokens,
                                  int64_t n_experts) {
  __shared__ double s_warp[kWarps];
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int64_t stride = int64_t(gridDim.x) * kWarps;
  double acc = 0;
  for (int64_t t = int64_t(blockIdx.x) * kWarps + warp; t < n_tokens; t += stride) {
    const double lse = warp_log_sum_exp(logits + t * n_experts, n_experts, lane);
    acc += lse * lse;
  }
  if (lane == 0) s_warp[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < kWarps; ++w) total += s_warp[w];
    partials[blockIdx.x] = total;
  }
}

// One block: loss = scale · Σ partials, the partials strided over the threads, then the
// threads' sums as a fixed tree (block_sum).
template <typename T>
__global__ void z_finish_kernel(T* loss, const double* partials, int64_t n_partials, double scale) {
  __shared__ double s_sum[kThreads];
  double acc = 0;
  for (int64_t b = threadIdx.x; b < n_partials; b += kThreads) acc += partials[b];
  const double total = block_sum<kThreads>(acc, s_sum);
  if (threadIdx.x == 0) *loss = T(scale * total);
}

template <typename T>
__global__ void z_backward_kernel(T* dlogits, const T* dloss, const T* logits, int64_t n_tokens,
                                  int64_t n_experts, double coeff) {
  const double base = double(*dloss) * coeff / double(n_tokens);
  const int lane = int(threadIdx.x) % 32;
  const int64_t first = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t t = first; t < n_tokens; t += stride) {  // warp-uniform
    const T* z = logits + t * n_experts;
    const double lse = warp_log_sum_exp(z, n_experts, lane);
    for (int64_t e = lane; e < n_experts; e += 32)
      dlogits[t * n_experts + e] = T(base * 2.0 * lse * exp(double(z[e]) - lse));
  }
}

void check_sizes(const char* op, int64_t n_tokens, int64_t n_experts) {
  REMOE_CHECK(n_tokens >= 0 && n_experts >= 0, op, ": negative size (T ", n_tokens, ", E ",
              n_experts, ")");
  REMOE_CHECK(n_tokens == 0 || n_experts >= 1, op, ": logits (", n_tokens,
              ", 0) have no experts to sum over");
}

}  // namespace

template <typename T>
void z_loss_forward(T* loss, const T* logits, int64_t n_tokens, int64_t n_experts, double coeff,
                    cudaStream_t stream) {
  NvtxRange range("z_loss_forward");
  check_sizes("z_loss_forward", n_tokens, n_experts);
  if (n_tokens == 0) {  // 0 rather than 0/0; zero bits are 0.0
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(T), stream));
    return;
  }
  const int64_t blocks = std::min(kMaxPartials, (n_tokens + kWarps - 1) / kWarps);
  Scratch scratch(size_t(blocks) * sizeof(double), stream);
  double* partials = scratch.as<double>();
  z_partials_kernel<T>
      <<<unsigned(blocks), kThreads, 0, stream>>>(partials, logits, n_tokens, n_experts);
  CUDA_CHECK(cudaGetLastError());
  z_finish_kernel<T><<<1, kThreads, 0, stream>>>(loss, partials, blocks, coeff / double(n_tokens));
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void z_loss_backward(T* dlogits, const T* dloss, const T* logits, int64_t n_tokens,
                     int64_t n_experts, double coeff, cudaStream_t stream) {
  NvtxRange range("z_loss_backward");
  check_sizes("z_loss_backward", n_tokens, n_experts);
  if (n_tokens == 0 || n_experts == 0) return;
  z_backward_kernel<T><<<grid_for(n_tokens, kWarps), kThreads, 0, stream>>>(
      dlogits, dloss, logits, n_tokens, n_experts, coeff);
  CUDA_CHECK(cudaGetLastError());
}

#define REMOE_INSTANTIATE(T)                                                             \
  template void z_loss_forward<T>(T*, const T*, int64_t, int64_t, double, cudaStream_t); \
  template void z_loss_backward<T>(T*, const T*, const T*, int64_t, int64_t, double, cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(double)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
