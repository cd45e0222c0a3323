// Gradient-norm pieces on the GPU.
//   x: (n) T (f32 or bf16); out, sum_sq: one double on the device.
// sum_squares: a grid whose size depends on n only (kBlocks at most) sums x² in double, each
// block in a fixed tree order into partial[block]; one block then adds the partials in order.
// The same n gives the same sum on any GPU, run after run.
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/grad_norm.h"

namespace remoe::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int kBlocks = 1024;  // partial sums at most

template <typename T>
__global__ void sum_squares_partial_kernel(double* partial, const T* x, int64_t n) {
  __shared__ double scratch[kThreads];
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const double v = to_f32(x[i]);
    acc += v * v;
  }
  acc = block_sum<kThreads>(acc, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_partials_kernel(double* out, const double* partial, int n_partials, bool accumulate) {
  __shared__ double scratch[kThreads];
  double acc = 0;
  for (int i = threadIdx.x; i < n_partials; i += kThreads) acc += partial[i];
  acc = block_sum<kThreads>(acc, scratch);
  if (threadIdx.x == 0) out[0] = accumulate ? out[0] + acc : acc;
}

template <typename T>
__global__ void scale_kernel(T* x, double s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = from_f32<T>(float(s * double(to_f32(x[i]))));
}

template <typename T>
__global__ void clip_kernel(T* x, const double* sum_sq, double max_norm, int64_t n) {
  const double coef = max_norm / (sqrt(sum_sq[0]) + 1e-6);
  if (coef >= 1.0) return;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = from_f32<T>(float(coef * double(to_f32(x[i]))));
}

}  // namespace

template <typename T>
void sum_squares(double* out, const T* x, int64_t n, bool accumulate, cudaStream_t stream) {
  NvtxRange range("sum_squares");
  const int n_partials = n > 0 ? grid_for(n, kThreads, kBlocks) : 0;
  Scratch partial(size_t(n_partials) * sizeof(double), stream);
  if (n_partials > 0) {
    sum_squares_partial_kernel<<<n_partials, kThreads, 0, stream>>>(partial.as<double>(), dev(x), n);
    CUDA_CHECK(cudaGetLastError());
  }
  // Runs with no partials too: an empty x still sets (or keeps) out[0].
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(out, partial.as<double>(), n_partials, accumulate);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void scale_inplace(T* x, double s, int64_t n, cudaStream_t stream) {
  NvtxRange range("scale_inplace");
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dev(x), s, n);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void clip_inplace(T* x, const double* sum_sq, double max_norm, int64_t n, cudaStream_t stream) {
  NvtxRange range("clip_inplace");
  if (n == 0) return;
  clip_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dev(x), sum_sq, max_norm, n);
  CUDA_CHECK(cudaGetLastError());
}

template void sum_squares<float>(double*, const float*, int64_t, bool, cudaStream_t);
template void sum_squares<bf16>(double*, const bf16*, int64_t, bool, cudaStream_t);
template void scale_inplace<float>(float*, double, int64_t, cudaStream_t);
template void scale_inplace<bf16>(bf16*, double, int64_t, cudaStream_t);
template void clip_inplace<float>(float*, const double*, double, int64_t, cudaStream_t);
template void clip_inplace<bf16>(bf16*, const double*, double, int64_t, cudaStream_t);

}  // namespace remoe::cuda
