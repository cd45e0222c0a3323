// RoPE (rotate-half) on the GPU.
//   x, y, dy, dx: (B, S, H, Dh) T (f32 or bf16), Dh even; pair (i, i + Dh/2) of each head row
//   rotates by s · base^(-2i/Dh), s the position inside the sequence.
// One thread per (b, s, i) computes its sine and cosine once (in double, as the CPU does) and
// rotates pair i of every head of that token; adjacent threads touch adjacent i (coalesced).
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/rope.h"

namespace remoe::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

// sign = −1 rotates by the opposite angle (the transpose: the backward).
template <typename T>
__global__ void rope_kernel(T* y, const T* x, int64_t batch, int64_t seq, int64_t heads,
                            int64_t head_dim, double base, double sign) {
  const int64_t half = head_dim / 2;
  const int64_t n = batch * seq * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half;
    const int64_t token = idx / half;  // b · seq + s
    const int64_t s = token % seq;
    const double angle = double(s) * pow(base, -2.0 * double(i) / double(head_dim));
    double sn, c;
    sincos(angle, &sn, &c);
    sn *= sign;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t row = (token * heads + h) * head_dim;
      const double x1 = to_f32(x[row + i]), x2 = to_f32(x[row + i + half]);
      y[row + i] = from_f32<T>(float(x1 * c - x2 * sn));
      y[row + i + half] = from_f32<T>(float(x2 * c + x1 * sn));
    }
  }
}

template <typename T>
void rope_launch(const char* name, T* y, const T* x, int64_t batch, int64_t seq, int64_t heads,
                 int64_t head_dim, double base, double sign, cudaStream_t stream) {
  NvtxRange range(name);
  REMOE_CHECK(head_dim % 2 == 0, name, ": head_dim ", head_dim, " must be even");
  const int64_t n = batch * seq * (head_dim / 2);
  if (n == 0 || heads == 0) return;
  rope_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dev(y), dev(x), batch, seq, heads, head_dim,
                                                               base, sign);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

template <typename T>
void rope_forward(T* y, const T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                  double base, cudaStream_t stream) {
  rope_launch("rope_forward", y, x, batch, seq, heads, head_dim, base, 1.0, stream);
}

template <typename T>
void rope_backward(T* dx, const T* dy, int64_t batch, int64_t seq, int64_t heads,
                   int64_t head_dim, double base, cudaStream_t stream) {
  rope_launch("rope_backward", dx, dy, batch, seq, heads, head_dim, base, -1.0, stream);
}

template void rope_forward<float>(float*, const float*, int64_t, int64_t, int64_t, int64_t, double, cudaStream_t);
template void rope_forward<bf16>(bf16*, const bf16*, int64_t, int64_t, int64_t, int64_t, double, cudaStream_t);
template void rope_backward<float>(float*, const float*, int64_t, int64_t, int64_t, int64_t, double, cudaStream_t);
template void rope_backward<bf16>(bf16*, const bf16*, int64_t, int64_t, int64_t, int64_t, double, cudaStream_t);

}  // namespace remoe::cuda
