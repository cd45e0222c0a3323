// RMSNorm on the GPU: y[r] = x[r] · rstd[r] ⊙ w, rstd[r] = 1 / sqrt(mean_j x[r,j]² + eps).
//   x, y, dy, dx: (rows, dim) T (f32 or bf16); w, dw: (dim) f32; rstd: (rows) f32.
//   forward: one block per row (sum of squares by a fixed-order block reduction).
//   backward dx: one block per row, dx = rstd · (g − n · mean_j(g ⊙ n)), g = dy ⊙ w, n = x · rstd.
//   backward dw: partial sums over chunks of kRowsPerChunk rows (one thread per feature, rows in
//   order), then one thread per feature adds the chunks in order: no atomics, deterministic.
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/rmsnorm.h"

namespace remoe::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int64_t kRowsPerChunk = 64;

template <typename T>
__global__ void rmsnorm_forward_kernel(T* y, float* rstd, const T* x, const float* w, int64_t dim,
                                       float eps) {
  __shared__ float scratch[kThreads];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * dim;
  T* yr = y + r * dim;
  float sum_sq = 0.f;
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) {
    const float v = to_f32(xr[j]);
    sum_sq += v * v;
  }
  sum_sq = block_sum<kThreads>(sum_sq, scratch);
  // NOTE: 1/sqrtf rather than rsqrtf: sqrtf is correctly rounded, rsqrtf is not.
  const float s = 1.f / sqrtf(sum_sq / float(dim) + eps);
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) yr[j] = from_f32<T>(to_f32(xr[j]) * s * w[j]);
  if (rstd != nullptr && threadIdx.x == 0) rstd[r] = s;
}

template <typename T>
__global__ void rmsnorm_backward_dx_kernel(T* dx, const T* dy, const T* x, const float* w,
                                           const float* rstd, int64_t dim) {
  __shared__ float scratch[kThreads];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * dim;
  const T* dyr = dy + r * dim;
  T* dxr = dx + r * dim;
  const float s = rstd[r];
  float dot = 0.f;  // Σ_j g_j x_j; times s it is Σ_j g_j n_j
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) dot += to_f32(dyr[j]) * w[j] * to_f32(xr[j]);
  dot = block_sum<kThreads>(dot, scratch);
  const float mean = dot * s / float(dim);
  for (int64_t j = threadIdx.x; j < dim; j += kThreads) {
    const float n = to_f32(xr[j]) * s;
    dxr[j] = from_f32<T>(s * (to_f32(dyr[j]) * w[j] - n * mean));
  }
}

// partial: (n_chunks, dim); grid (ceil(dim / kThreads), n_chunks).
template <typename T>
__global__ void rmsnorm_dw_partial_kernel(float* partial, const T* dy, const T* x, const float* rstd,
                                          int64_t rows, int64_t dim) {
  const int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (j >= dim) return;
  const int64_t r0 = blockIdx.y * kRowsPerChunk;
  const int64_t r1 = min(rows, r0 + kRowsPerChunk);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) acc += to_f32(dy[r * dim + j]) * to_f32(x[r * dim + j]) * rstd[r];
  partial[blockIdx.y * dim + j] = acc;
}

__global__ void rmsnorm_dw_reduce_kernel(float* dw, const float* partial, int64_t n_chunks,
                                         int64_t dim) {
  const int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (j >= dim) return;
  float acc = 0.f;
  for (int64_t c = 0; c < n_chunks; ++c) acc += partial[c * dim + j];
  dw[j] = acc;
}

}  // namespace

template <typename T>
void rmsnorm_forward(T* y, float* rstd, const T* x, const float* w, int64_t rows, int64_t dim,
                     double eps, cudaStream_t stream) {
  NvtxRange range("rmsnorm_forward");
  if (rows == 0 || dim == 0) return;
  REMOE_CHECK(rows <= INT32_MAX, "rmsnorm_forward: ", rows, " rows exceed one grid");
  rmsnorm_forward_kernel<<<int(rows), kThreads, 0, stream>>>(dev(y), rstd, dev(x), w, dim, float(eps));
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dy, const T* x, const float* w,
                      const float* rstd, int64_t rows, int64_t dim, cudaStream_t stream) {
  NvtxRange range("rmsnorm_backward");
  if (dim == 0) return;
  REMOE_CHECK(rows <= INT32_MAX, "rmsnorm_backward: ", rows, " rows exceed one grid");
  if (dx != nullptr && rows > 0) {
    rmsnorm_backward_dx_kernel<<<int(rows), kThreads, 0, stream>>>(dev(dx), dev(dy), dev(x), w, rstd, dim);
    CUDA_CHECK(cudaGetLastError());
  }
  if (dw != nullptr) {
    const int64_t n_chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
    REMOE_CHECK(n_chunks <= 65535, "rmsnorm_backward: ", rows, " rows exceed the dw grid");
    const int col_blocks = int((dim + kThreads - 1) / kThreads);
    Scratch partial(size_t(n_chunks * dim) * sizeof(float), stream);
    if (n_chunks > 0) {
      rmsnorm_dw_partial_kernel<<<dim3(col_blocks, unsigned(n_chunks)), kThreads, 0, stream>>>(
          partial.as<float>(), dev(dy), dev(x), rstd, rows, dim);
      CUDA_CHECK(cudaGetLastError());
    }
    // With no rows this writes dw = 0, as the CPU does.
    rmsnorm_dw_reduce_kernel<<<col_blocks, kThreads, 0, stream>>>(dw, partial.as<float>(), n_chunks, dim);
    CUDA_CHECK(cudaGetLastError());
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int64_t, int64_t, double, cudaStream_t);
template void rmsnorm_forward<bf16>(bf16*, float*, const bf16*, const float*, int64_t, int64_t, double, cudaStream_t);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*, const float*, int64_t, int64_t, cudaStream_t);
template void rmsnorm_backward<bf16>(bf16*, float*, const bf16*, const bf16*, const float*, const float*, int64_t, int64_t, cudaStream_t);

}  // namespace remoe::cuda
