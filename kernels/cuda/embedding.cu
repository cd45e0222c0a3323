// Embedding lookup and its deterministic backward on the GPU.
//   ids: (n_tokens) i32 in [0, vocab); table, dtable: (vocab, dim) T; out, dout: (n_tokens, dim) T.
//   forward: one thread per output element.
//   backward: (1) token indices 0..T-1 sorted by id with a stable radix sort (CUB), so tokens
//   that share an id stay in token order; (2) dtable zeroed; (3) one block per sorted position
//   that starts a run of equal ids sums the run's dout rows in token order, in f32, and writes
//   the id's row. No atomics: the same sum order as the CPU reference.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/embedding.h"

namespace remoe::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int kRowThreads = 128;  // threads over dim in the backward's per-id blocks

template <typename T>
__global__ void embedding_forward_kernel(T* out, const int32_t* ids, const T* table, int64_t n,
                                         int64_t dim) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / dim, j = i % dim;
    out[i] = table[int64_t(ids[t]) * dim + j];
  }
}

__global__ void iota_kernel(int32_t* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = int32_t(i);
}

// One block per sorted position; only the first position of each run of equal ids works.
template <typename T>
__global__ void embedding_backward_kernel(T* dtable, const T* dout, const uint32_t* sorted_ids,
                                          const int32_t* sorted_tokens, int64_t n_tokens,
                                          int64_t dim) {
  const int64_t start = blockIdx.x;
  const uint32_t id = sorted_ids[start];
  if (start > 0 && sorted_ids[start - 1] == id) return;
  for (int64_t j = threadIdx.x; j < dim; j += kRowThreads) {
    float acc = 0.f;
    for (int64_t p = start; p < n_tokens && sorted_ids[p] == id; ++p)
      acc += to_f32(dout[int64_t(sorted_tokens[p]) * dim + j]);
    dtable[int64_t(id) * dim + j] = from_f32<T>(acc);
  }
}

int bits_for(int64_t vocab) {
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) < vocab) ++bits;
  return bits;
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const int32_t* ids, const T* table, int64_t n_tokens,
                       int64_t vocab, int64_t dim, cudaStream_t stream) {
  NvtxRange range("embedding_forward");
  (void)vocab;
  const int64_t n = n_tokens * dim;
  if (n == 0) return;
  embedding_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dev(out), ids, dev(table), n, dim);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t n_tokens,
                        int64_t vocab, int64_t dim, cudaStream_t stream) {
  NvtxRange range("embedding_backward");
  if (vocab == 0 || dim == 0) return;
  // All-zero bits are 0.0 in f32 and bf16: rows no token used stay zero.
  CUDA_CHECK(cudaMemsetAsync(dtable, 0, size_t(vocab * dim) * sizeof(T), stream));
  if (n_tokens == 0) return;
  REMOE_CHECK(n_tokens <= INT32_MAX, "embedding_backward: ", n_tokens, " tokens exceed one grid");

  const int n = int(n_tokens);
  // ids are validated non-negative by the op layer, so they sort as unsigned keys.
  const auto* keys_in = reinterpret_cast<const uint32_t*>(ids);
  Scratch keys_out(size_t(n) * sizeof(uint32_t), stream);
  Scratch tokens_in(size_t(n) * sizeof(int32_t), stream);
  Scratch tokens_out(size_t(n) * sizeof(int32_t), stream);
  iota_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(tokens_in.as<int32_t>(), n);
  CUDA_CHECK(cudaGetLastError());

  const int end_bit = bits_for(vocab);
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out.as<uint32_t>(),
                                             tokens_in.as<int32_t>(), tokens_out.as<int32_t>(), n,
                                             0, end_bit, stream));
  Scratch temp(temp_bytes, stream);
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys_in, keys_out.as<uint32_t>(),
                                             tokens_in.as<int32_t>(), tokens_out.as<int32_t>(), n,
                                             0, end_bit, stream));

  embedding_backward_kernel<<<n, kRowThreads, 0, stream>>>(dev(dtable), dev(dout), keys_out.as<uint32_t>(),
                                                           tokens_out.as<int32_t>(), n_tokens, dim);
  CUDA_CHECK(cudaGetLastError());
}

template void embedding_forward<float>(float*, const int32_t*, const float*, int64_t, int64_t, int64_t, cudaStream_t);
template void embedding_forward<bf16>(bf16*, const int32_t*, const bf16*, int64_t, int64_t, int64_t, cudaStream_t);
template void embedding_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t);
template void embedding_backward<bf16>(bf16*, const bf16*, const int32_t*, int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace remoe::cuda
