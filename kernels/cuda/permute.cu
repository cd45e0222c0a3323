// Token permutation on the GPU (contracts in kernels/permute.h).
//   mask: (T, E) i32; expert_offsets: (E + 1) i32; token_index: (N) i32; row_of: (T, E) i32;
//   x: (T, d), out / dout: (N, d), dx: (T, d) in f32, f64 or bf16.
//
// permute_indices: the row of an active pair (t, e) is the number of active pairs before it in
// (expert, token) order. So: (1) transpose the mask into 0/1 flags in (E, T) order, (2) one
// cub::DeviceScan::ExclusiveSum over the T·E flags gives every pair's row, and the prefix at
// (e, 0) is expert_offsets[e], (3) one thread per pair writes row_of and token_index. Integer
// work only: the result is the CPU's, bit for bit. Scratch: 2·T·E i32 plus CUB's temp storage,
// from cudaMallocAsync on the stream (detail::Scratch, launch.cuh).
// gather_rows: one block per row (forward) or per token (backward, e ascending, no atomics).
#include <cuda_runtime.h>

#include <cub/device/device_scan.cuh>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/permute.h"

namespace remoe::cuda {
using namespace detail;
namespace {

constexpr int kTile = 32;  // transpose tile; blocks of kTile × kTileRows threads
constexpr int kTileRows = 8;
constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 65535;

// flags[e·T + t] = (mask[t·E + e] != 0), through a padded shared tile so both sides coalesce.
__global__ void transpose_flags_kernel(int32_t* flags, const int32_t* mask, int64_t n_tokens,
                                       int64_t n_experts) {
  __shared__ int32_t tile[kTile][kTile + 1];
  const int64_t t0 = int64_t(blockIdx.x) * kTile, e0 = int64_t(blockIdx.y) * kTile;
  for (int i = int(threadIdx.y); i < kTile; i += kTileRows) {
    const int64_t t = t0 + i, e = e0 + threadIdx.x;
    if (t < n_tokens && e < n_experts) tile[i][threadIdx.x] = mask[t * n_experts + e] != 0 ? 1 : 0;
  }
  __syncthreads();
  for (int i = int(threadIdx.y); i < kTile; i += kTileRows) {
    const int64_t e = e0 + i, t = t0 + threadIdx.x;
    if (t < n_tokens && e < n_experts) flags[e * n_tokens + t] = tile[threadIdx.x][i];
  }
}

// pos: exclusive prefix of flags, (E, T) order.
__global__ void scatter_rows_kernel(int32_t* token_index, int32_t* row_of, const int32_t* mask,
                                    const int32_t* pos, int64_t n_tokens, int64_t n_experts) {
  const int64_t n = n_tokens * n_experts;
  for (int64_t pair = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; pair < n;
       pair += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = pair / n_experts, e = pair % n_experts;
    if (mask[pair] != 0) {
      const int32_t row = pos[e * n_tokens + t];
      row_of[pair] = row;
      token_index[row] = int32_t(t);
    } else {
      row_of[pair] = -1;
    }
  }
}

// Needs T·E > 0: offsets[e] = pos[e·T], offsets[E] = the total.
__global__ void offsets_kernel(int32_t* expert_offsets, const int32_t* pos, const int32_t* flags,
                               int64_t n_tokens, int64_t n_experts) {
  const int64_t n = n_tokens * n_experts;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e <= n_experts;
       e += int64_t(gridDim.x) * blockDim.x)
    expert_offsets[e] = e < n_experts ? pos[e * n_tokens] : pos[n - 1] + flags[n - 1];
}

template <typename T>
__global__ void gather_rows_kernel(T* out, const T* x, const int32_t* token_index,
                                   int64_t n_rows, int64_t dim) {
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    const T* src = x + int64_t(token_index[r]) * dim;
    T* dst = out + r * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = src[j];
  }
}

template <typename T>
__global__ void gather_rows_backward_kernel(T* dx, const T* dout, const int32_t* row_of,
                                            int64_t n_tokens, int64_t n_experts, int64_t dim) {
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    const int32_t* rows = row_of + t * n_experts;
    T* dst = dx + t * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      acc_t<T> acc = 0;
      for (int64_t e = 0; e < n_experts; ++e) {
        const int32_t row = rows[e];
        if (row >= 0) acc += load_acc(dout[int64_t(row) * dim + j]);
      }
      dst[j] = store_as<T>(acc);
    }
  }
}

unsigned grid_for(int64_t n, int64_t per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  return unsigned(b < kMaxGrid ? b : kMaxGrid);
}

}  // namespace

void permute_indices(int32_t* expert_offsets, int32_t* token_index, int32_t* row_of,
                     const int32_t* mask, int64_t n_tokens, int64_t n_experts,
                     cudaStream_t stream) {
  NvtxRange range("permute_indices");
  REMOE_CHECK(n_tokens >= 0 && n_experts >= 0, "permute_indices: negative size (T ", n_tokens,
              ", E ", n_experts, ")");
  const int64_t n = n_tokens * n_experts;
  REMOE_CHECK(n < (int64_t(1) << 31), "permute_indices: T·E = ", n,
              " does not fit the i32 rows");
  if (n == 0) {  // no pairs: every expert is empty
    CUDA_CHECK(cudaMemsetAsync(expert_offsets, 0, size_t(n_experts + 1) * sizeof(int32_t), stream));
    return;
  }

  size_t cub_bytes = 0;
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, cub_bytes, static_cast<const int32_t*>(nullptr),
                                           static_cast<int32_t*>(nullptr), int(n), stream));
  const size_t flags_bytes = scratch_align(size_t(n) * sizeof(int32_t));
  Scratch scratch(2 * flags_bytes + cub_bytes, stream);
  int32_t* flags = scratch.as<int32_t>();
  int32_t* pos = scratch.as<int32_t>(flags_bytes);
  void* cub_temp = scratch.as<char>(2 * flags_bytes);

  const dim3 tile_grid(unsigned((n_tokens + kTile - 1) / kTile), unsigned((n_experts + kTile - 1) / kTile));
  REMOE_CHECK(tile_grid.y <= 65535, "permute_indices: E = ", n_experts, " too large");
  transpose_flags_kernel<<<tile_grid, dim3(kTile, kTileRows), 0, stream>>>(flags, mask, n_tokens,
                                                                           n_experts);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(cub_temp, cub_bytes, flags, pos, int(n), stream));
  scatter_rows_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(token_index, row_of, mask,
                                                                      pos, n_tokens, n_experts);
  CUDA_CHECK(cudaGetLastError());
  offsets_kernel<<<grid_for(n_experts + 1, kThreads), kThreads, 0, stream>>>(
      expert_offsets, pos, flags, n_tokens, n_experts);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void gather_rows_forward(T* out, const T* x, const int32_t* token_index, int64_t n_rows,
                         int64_t dim, cudaStream_t stream) {
  NvtxRange range("gather_rows_forward");
  if (n_rows == 0 || dim == 0) return;
  gather_rows_kernel<<<unsigned(n_rows < kMaxGrid ? n_rows : kMaxGrid), kThreads, 0, stream>>>(
      dev(out), dev(x), token_index, n_rows, dim);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void gather_rows_backward(T* dx, const T* dout, const int32_t* row_of, int64_t n_tokens,
                          int64_t n_experts, int64_t dim, cudaStream_t stream) {
  NvtxRange range("gather_rows_backward");
  if (n_tokens == 0 || dim == 0) return;
  gather_rows_backward_kernel<<<unsigned(n_tokens < kMaxGrid ? n_tokens : kMaxGrid), kThreads, 0,
                                stream>>>(dev(dx), dev(dout), row_of, n_tokens, n_experts,
                                          dim);
  CUDA_CHECK(cudaGetLastError());
}

#define REMOE_INSTANTIATE(T)                                                                    \
  template void gather_rows_forward<T>(T*, const T*, const int32_t*, int64_t, int64_t,           \
                                       cudaStream_t);                                           \
  template void gather_rows_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t, \
                                        cudaStream_t);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(double)
REMOE_INSTANTIATE(bf16)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
