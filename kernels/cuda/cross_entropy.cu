// Fused softmax cross-entropy on the GPU (f32).
//   logits, dlogits: (T, V); targets: (T) i32 in [0, V) or −1 (ignored); lse: (T);
//   loss, dloss: (1) on the device.
//   forward: (1) one block per row: each thread keeps an online (max, sum) over its strided
//   slice of V, then the block merges the pairs in a fixed tree order → lse[t];
//   (2) one block adds lse[t] − logits[t, target] over valid rows in double, in a fixed order,
//   and divides by their count (0 valid rows → loss 0).
//   backward: (1) one block counts valid rows and stores dloss / n_valid;
//   (2) one block per row writes scale · (softmax − onehot), zero rows where ignored.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/check.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"

namespace remoe::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

// (m, s) ⊕ (m2, s2): the sum of exp(z − max) over both parts. An empty part has m = −inf.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

__global__ void cross_entropy_lse_kernel(float* lse, const float* logits, int64_t vocab) {
  __shared__ float m_sh[kThreads], s_sh[kThreads];
  const float* z = logits + int64_t(blockIdx.x) * vocab;
  float m = -INFINITY, s = 0.f;
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const float x = z[v];
    if (x > m) {
      s = (m == -INFINITY ? 0.f : s * expf(m - x)) + 1.f;
      m = x;
    } else if (m != -INFINITY) {  // x = m = −inf adds nothing (and would give a NaN)
      s += expf(x - m);
    }
  }
  m_sh[threadIdx.x] = m;
  s_sh[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) {
      float mm = m_sh[threadIdx.x], ss = s_sh[threadIdx.x];
      merge(mm, ss, m_sh[threadIdx.x + stride], s_sh[threadIdx.x + stride]);
      m_sh[threadIdx.x] = mm;
      s_sh[threadIdx.x] = ss;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) lse[blockIdx.x] = m_sh[0] + logf(s_sh[0]);
}

__global__ void cross_entropy_loss_kernel(float* loss, const float* lse, const float* logits,
                                          const int32_t* targets, int64_t n_tokens, int64_t vocab) {
  __shared__ double scratch[kThreads];
  double total = 0, count = 0;
  for (int64_t t = threadIdx.x; t < n_tokens; t += kThreads) {
    const int32_t target = targets[t];
    if (target < 0) continue;
    total += double(lse[t]) - double(logits[t * vocab + target]);
    count += 1;
  }
  total = block_sum<kThreads>(total, scratch);
  count = block_sum<kThreads>(count, scratch);
  if (threadIdx.x == 0) loss[0] = count > 0 ? float(total / count) : 0.f;
}

__global__ void cross_entropy_scale_kernel(float* scale, const float* dloss, const int32_t* targets,
                                           int64_t n_tokens) {
  __shared__ int64_t scratch[kThreads];
  int64_t count = 0;
  for (int64_t t = threadIdx.x; t < n_tokens; t += kThreads) count += targets[t] >= 0;
  count = block_sum<kThreads>(count, scratch);
  if (threadIdx.x == 0) scale[0] = count > 0 ? float(double(dloss[0]) / double(count)) : 0.f;
}

__global__ void cross_entropy_backward_kernel(float* dlogits, const float* scale, const float* logits,
                                              const float* lse, const int32_t* targets, int64_t vocab) {
  const int64_t t = blockIdx.x;
  float* dz = dlogits + t * vocab;
  const int32_t target = targets[t];
  if (target < 0) {
    for (int64_t v = threadIdx.x; v < vocab; v += kThreads) dz[v] = 0.f;
    return;
  }
  const float* z = logits + t * vocab;
  const float l = lse[t], s = scale[0];
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads)
    dz[v] = s * (expf(z[v] - l) - (v == target ? 1.f : 0.f));
}

}  // namespace

void cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets,
                           int64_t n_tokens, int64_t vocab, cudaStream_t stream) {
  NvtxRange range("cross_entropy_forward");
  REMOE_CHECK(n_tokens <= INT32_MAX, "cross_entropy_forward: ", n_tokens, " rows exceed one grid");
  if (n_tokens > 0) {
    REMOE_CHECK(vocab > 0, "cross_entropy_forward: vocab must be positive");
    cross_entropy_lse_kernel<<<int(n_tokens), kThreads, 0, stream>>>(lse, logits, vocab);
    CUDA_CHECK(cudaGetLastError());
  }
  // Always runs: no rows still writes loss = 0.
  cross_entropy_loss_kernel<<<1, kThreads, 0, stream>>>(loss, lse, logits, targets, n_tokens, vocab);
  CUDA_CHECK(cudaGetLastError());
}

void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits,
                            const float* lse, const int32_t* targets, int64_t n_tokens,
                            int64_t vocab, cudaStream_t stream) {
  NvtxRange range("cross_entropy_backward");
  if (n_tokens == 0 || vocab == 0) return;
  REMOE_CHECK(n_tokens <= INT32_MAX, "cross_entropy_backward: ", n_tokens, " rows exceed one grid");
  Scratch scale(sizeof(float), stream);
  cross_entropy_scale_kernel<<<1, kThreads, 0, stream>>>(scale.as<float>(), dloss, targets, n_tokens);
  CUDA_CHECK(cudaGetLastError());
  cross_entropy_backward_kernel<<<int(n_tokens), kThreads, 0, stream>>>(dlogits, scale.as<float>(), logits,
                                                                        lse, targets, vocab);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace remoe::cuda
