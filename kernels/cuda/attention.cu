// Causal grouped-query attention on the GPU, flash style, f32 (a first, clear version).
//   q, out, dq, dout: (B, S, Hq, Dh); k, v, dk, dv: (B, S, Hkv, Dh); lse, D: (B, Hq, S);
//   query head h reads kv head h / (Hq / Hkv); Dh ≤ kMaxHeadDim.
// Tiles of kTile = 32 queries and 32 keys: one warp's lanes. A block has 8 warps; a warp owns
// kRowsPerWarp = 4 rows of its block's tile (query rows in the forward and dQ kernels, key rows
// in the dK/dV kernel). In the score phase lane j works on column j of the 32×32 tile; in the
// accumulation phase lane l owns features l, l + 32, l + 64, l + 96 and the tile's
// probabilities come to it by warp shuffles. Rows of a tile that lanes read column-wise are
// padded to Dh + 1 floats, so the 32 lanes hit 32 different banks.
//   forward: one block per (query tile, query head, batch) walks the key tiles up to the
//     diagonal with an online softmax (running max m, running sum l, rescaled accumulator);
//     writes out = acc / l and lse = m + log l.
//   backward, from lse (P is recomputed, never stored):
//     (1) D = rowsum(dO ⊙ O) per query row, one warp per row;
//     (2) dK, dV: one block per (key tile, kv head, batch) walks the group's query heads in order
//         and their query tiles from the diagonal on: dV += Pᵀ dO, dK += dSᵀ Q · scale;
//     (3) dQ: one block per (query tile, query head, batch) walks the key tiles: dQ += dS K · scale;
//     with dS = P ⊙ (dP − D), dP = dO Vᵀ. Every sum runs in a fixed order: no atomics, the same
//     bits run to run.
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/attention.h"
#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"

namespace remoe::cuda {
namespace {

constexpr int kTile = 32;  // queries per query tile and keys per key tile: one per lane
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;
constexpr int kMaxHeadDim = 128;
constexpr int kDimsPerLane = kMaxHeadDim / 32;
constexpr unsigned kFullMask = 0xffffffffu;
static_assert(kTile == 32, "a tile's columns are a warp's lanes");
static_assert(kTile % kWarps == 0, "warps split a tile's rows evenly");

__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, offset));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

__device__ __forceinline__ float dot(const float* a, const float* b, int n) {
  float acc = 0.f;
  for (int d = 0; d < n; ++d) acc = fmaf(a[d], b[d], acc);
  return acc;
}

// Copies rows [row0, row0 + kTile) of a (seq, ·) matrix with `stride` floats between rows into
// tile (kTile, ld); rows past seq become zeros.
__device__ void load_tile(float* tile, int ld, const float* src, int64_t stride, int64_t row0, int64_t seq,
                          int head_dim) {
  for (int e = threadIdx.x; e < kTile * head_dim; e += kThreads) {
    const int r = e / head_dim, d = e % head_dim;
    const int64_t row = row0 + r;
    tile[r * ld + d] = row < seq ? src[row * stride + d] : 0.f;
  }
}

struct Dims {
  int64_t seq, q_heads, kv_heads;
  int head_dim;
  float scale;
};

__global__ void __launch_bounds__(kThreads)
attention_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v, Dims dims) {
  const int head_dim = dims.head_dim;
  const int64_t seq = dims.seq;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kTile;
  const int64_t g = h / (dims.q_heads / dims.kv_heads);
  const int64_t q_stride = dims.q_heads * head_dim, kv_stride = dims.kv_heads * head_dim;
  const float* q_bh = q + b * seq * q_stride + h * head_dim;
  const float* k_bg = k + b * seq * kv_stride + g * head_dim;
  const float* v_bg = v + b * seq * kv_stride + g * head_dim;

  extern __shared__ float smem[];
  float* q_s = smem;                         // (kTile, Dh): read row-wise (broadcast)
  float* k_s = q_s + kTile * head_dim;       // (kTile, Dh + 1): lane j reads row j
  float* v_s = k_s + kTile * (head_dim + 1); // (kTile, Dh): lane l reads feature l
  load_tile(q_s, head_dim, q_bh, q_stride, q0, seq, head_dim);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float acc[kRowsPerWarp][kDimsPerLane] = {};
  float m[kRowsPerWarp], l[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.f;
  }
  const int64_t last_query = min(seq, q0 + kTile) - 1;
  for (int64_t k0 = 0; k0 <= last_query; k0 += kTile) {
    __syncthreads();  // the previous tile's readers are done (and q_s is loaded)
    load_tile(k_s, head_dim + 1, k_bg, kv_stride, k0, seq, head_dim);
    load_tile(v_s, head_dim, v_bg, kv_stride, k0, seq, head_dim);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;
      const int64_t pos = q0 + r;
      if (pos >= seq || pos < k0) continue;  // warp-uniform: past the end, or no visible key
      const int64_t key = k0 + lane;
      const bool visible = key <= pos;
      float score = -INFINITY;
      if (visible) score = dot(q_s + r * head_dim, k_s + lane * (head_dim + 1), head_dim) * dims.scale;
      const float m_new = fmaxf(m[rr], warp_max(score));  // finite: key k0 ≤ pos is visible
      const float p = visible ? expf(score - m_new) : 0.f;
      const float alpha = expf(m[rr] - m_new);  // 0 on the first tile (m = −inf)
      l[rr] = l[rr] * alpha + warp_sum(p);
      m[rr] = m_new;
      const int visible_keys = int(min(int64_t(kTile), pos - k0 + 1));
#pragma unroll
      for (int t = 0; t < kDimsPerLane; ++t) acc[rr][t] *= alpha;
      for (int j = 0; j < visible_keys; ++j) {
        const float pj = __shfl_sync(kFullMask, p, j);
#pragma unroll
        for (int t = 0; t < kDimsPerLane; ++t) {
          const int d = lane + 32 * t;
          if (d < head_dim) acc[rr][t] = fmaf(pj, v_s[j * head_dim + d], acc[rr][t]);
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int64_t pos = q0 + warp * kRowsPerWarp + rr;
    if (pos >= seq) continue;
    float* out_row = out + b * seq * q_stride + pos * q_stride + h * head_dim;
#pragma unroll
    for (int t = 0; t < kDimsPerLane; ++t) {
      const int d = lane + 32 * t;
      if (d < head_dim) out_row[d] = acc[rr][t] / l[rr];
    }
    if (lse != nullptr && lane == 0) lse[(b * dims.q_heads + h) * seq + pos] = m[rr] + logf(l[rr]);
  }
}

// D[b, h, s] = Σ_d dO ⊙ O over the row; one warp per (b, s, h) row.
__global__ void __launch_bounds__(kThreads)
attention_row_dot_kernel(float* d_out, const float* dout, const float* out, int64_t batch, Dims dims) {
  const int64_t n_rows = batch * dims.seq * dims.q_heads;
  const int lane = threadIdx.x % 32;
  const int64_t warps_total = int64_t(gridDim.x) * kWarps;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; row < n_rows; row += warps_total) {
    const float* a = dout + row * dims.head_dim;
    const float* o = out + row * dims.head_dim;
    float acc = 0.f;
    for (int d = lane; d < dims.head_dim; d += 32) acc = fmaf(a[d], o[d], acc);
    acc = warp_sum(acc);
    if (lane == 0) {
      const int64_t h = row % dims.q_heads, bs = row / dims.q_heads;
      const int64_t s = bs % dims.seq, b = bs / dims.seq;
      d_out[(b * dims.q_heads + h) * dims.seq + s] = acc;
    }
  }
}

__global__ void __launch_bounds__(kThreads)
attention_dkdv_kernel(float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                      const float* lse, const float* d_rows, Dims dims) {
  const int head_dim = dims.head_dim;
  const int64_t seq = dims.seq;
  const int64_t b = blockIdx.z, g = blockIdx.y, k0 = int64_t(blockIdx.x) * kTile;
  const int64_t group = dims.q_heads / dims.kv_heads;
  const int64_t q_stride = dims.q_heads * head_dim, kv_stride = dims.kv_heads * head_dim;
  const float* k_bg = k + b * seq * kv_stride + g * head_dim;
  const float* v_bg = v + b * seq * kv_stride + g * head_dim;

  extern __shared__ float smem[];
  float* k_s = smem;                            // (kTile, Dh): this block's keys, read row-wise
  float* v_s = k_s + kTile * head_dim;          // (kTile, Dh)
  float* q_s = v_s + kTile * head_dim;          // (kTile, Dh + 1): lane i reads query row i
  float* do_s = q_s + kTile * (head_dim + 1);   // (kTile, Dh + 1)
  float* lse_s = do_s + kTile * (head_dim + 1); // (kTile)
  float* d_s = lse_s + kTile;                   // (kTile)
  load_tile(k_s, head_dim, k_bg, kv_stride, k0, seq, head_dim);
  load_tile(v_s, head_dim, v_bg, kv_stride, k0, seq, head_dim);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float dk_acc[kRowsPerWarp][kDimsPerLane] = {}, dv_acc[kRowsPerWarp][kDimsPerLane] = {};
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    const float* q_bh = q + b * seq * q_stride + h * head_dim;
    const float* do_bh = dout + b * seq * q_stride + h * head_dim;
    const float* lse_bh = lse + (b * dims.q_heads + h) * seq;
    const float* d_bh = d_rows + (b * dims.q_heads + h) * seq;
    for (int64_t q0 = k0; q0 < seq; q0 += kTile) {  // query tiles from the diagonal on
      __syncthreads();  // the previous tile's readers are done
      load_tile(q_s, head_dim + 1, q_bh, q_stride, q0, seq, head_dim);
      load_tile(do_s, head_dim + 1, do_bh, q_stride, q0, seq, head_dim);
      if (threadIdx.x < kTile) {
        const int64_t pos = q0 + threadIdx.x;
        lse_s[threadIdx.x] = pos < seq ? lse_bh[pos] : 0.f;
        d_s[threadIdx.x] = pos < seq ? d_bh[pos] : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int c = warp * kRowsPerWarp + rr;  // this key's row in the tile
        const int64_t key = k0 + c;
        if (key >= seq) continue;  // warp-uniform
        const int64_t pos = q0 + lane;
        const bool visible = pos < seq && pos >= key;
        float p = 0.f, ds = 0.f;
        if (visible) {
          const float* q_row = q_s + lane * (head_dim + 1);
          const float* do_row = do_s + lane * (head_dim + 1);
          p = expf(dot(q_row, k_s + c * head_dim, head_dim) * dims.scale - lse_s[lane]);
          ds = p * (dot(do_row, v_s + c * head_dim, head_dim) - d_s[lane]);
        }
        // Rows that can see this key: from max(key, q0) to the tile's end or seq.
        const int i_begin = int(max(int64_t(0), key - q0));
        const int i_end = int(min(int64_t(kTile), seq - q0));
        for (int i = i_begin; i < i_end; ++i) {
          const float pi = __shfl_sync(kFullMask, p, i);
          const float dsi = __shfl_sync(kFullMask, ds, i);
#pragma unroll
          for (int t = 0; t < kDimsPerLane; ++t) {
            const int d = lane + 32 * t;
            if (d < head_dim) {
              dv_acc[rr][t] = fmaf(pi, do_s[i * (head_dim + 1) + d], dv_acc[rr][t]);
              dk_acc[rr][t] = fmaf(dsi, q_s[i * (head_dim + 1) + d], dk_acc[rr][t]);
            }
          }
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int64_t key = k0 + warp * kRowsPerWarp + rr;
    if (key >= seq) continue;
    const int64_t off = b * seq * kv_stride + key * kv_stride + g * head_dim;
#pragma unroll
    for (int t = 0; t < kDimsPerLane; ++t) {
      const int d = lane + 32 * t;
      if (d >= head_dim) continue;
      if (dk != nullptr) dk[off + d] = dk_acc[rr][t] * dims.scale;
      if (dv != nullptr) dv[off + d] = dv_acc[rr][t];
    }
  }
}

__global__ void __launch_bounds__(kThreads)
attention_dq_kernel(float* dq, const float* dout, const float* q, const float* k, const float* v,
                    const float* lse, const float* d_rows, Dims dims) {
  const int head_dim = dims.head_dim;
  const int64_t seq = dims.seq;
  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kTile;
  const int64_t g = h / (dims.q_heads / dims.kv_heads);
  const int64_t q_stride = dims.q_heads * head_dim, kv_stride = dims.kv_heads * head_dim;
  const float* q_bh = q + b * seq * q_stride + h * head_dim;
  const float* do_bh = dout + b * seq * q_stride + h * head_dim;
  const float* k_bg = k + b * seq * kv_stride + g * head_dim;
  const float* v_bg = v + b * seq * kv_stride + g * head_dim;

  extern __shared__ float smem[];
  float* q_s = smem;                          // (kTile, Dh): read row-wise
  float* do_s = q_s + kTile * head_dim;       // (kTile, Dh)
  float* k_s = do_s + kTile * head_dim;       // (kTile, Dh + 1): lane j reads key row j
  float* v_s = k_s + kTile * (head_dim + 1);  // (kTile, Dh + 1)
  load_tile(q_s, head_dim, q_bh, q_stride, q0, seq, head_dim);
  load_tile(do_s, head_dim, do_bh, q_stride, q0, seq, head_dim);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float row_lse[kRowsPerWarp], row_d[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int64_t pos = q0 + warp * kRowsPerWarp + rr;
    row_lse[rr] = pos < seq ? lse[(b * dims.q_heads + h) * seq + pos] : 0.f;
    row_d[rr] = pos < seq ? d_rows[(b * dims.q_heads + h) * seq + pos] : 0.f;
  }
  float dq_acc[kRowsPerWarp][kDimsPerLane] = {};
  const int64_t last_query = min(seq, q0 + kTile) - 1;
  for (int64_t k0 = 0; k0 <= last_query; k0 += kTile) {
    __syncthreads();
    load_tile(k_s, head_dim + 1, k_bg, kv_stride, k0, seq, head_dim);
    load_tile(v_s, head_dim + 1, v_bg, kv_stride, k0, seq, head_dim);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;
      const int64_t pos = q0 + r;
      if (pos >= seq || pos < k0) continue;  // warp-uniform
      const int64_t key = k0 + lane;
      float ds = 0.f;
      if (key <= pos) {
        const float p = expf(dot(q_s + r * head_dim, k_s + lane * (head_dim + 1), head_dim) * dims.scale -
                             row_lse[rr]);
        ds = p * (dot(do_s + r * head_dim, v_s + lane * (head_dim + 1), head_dim) - row_d[rr]);
      }
      const int visible_keys = int(min(int64_t(kTile), pos - k0 + 1));
      for (int j = 0; j < visible_keys; ++j) {
        const float dsj = __shfl_sync(kFullMask, ds, j);
#pragma unroll
        for (int t = 0; t < kDimsPerLane; ++t) {
          const int d = lane + 32 * t;
          if (d < head_dim) dq_acc[rr][t] = fmaf(dsj, k_s[j * (head_dim + 1) + d], dq_acc[rr][t]);
        }
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int64_t pos = q0 + warp * kRowsPerWarp + rr;
    if (pos >= seq) continue;
    float* dq_row = dq + b * seq * q_stride + pos * q_stride + h * head_dim;
#pragma unroll
    for (int t = 0; t < kDimsPerLane; ++t) {
      const int d = lane + 32 * t;
      if (d < head_dim) dq_row[d] = dq_acc[rr][t] * dims.scale;
    }
  }
}

// Dims after checking the contract; false when there is nothing to compute.
bool make_dims(Dims& dims, const char* name, int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
               int64_t head_dim) {
  REMOE_CHECK(head_dim >= 1 && head_dim <= kMaxHeadDim, name, ": head_dim ", head_dim, " must be in [1, ",
              kMaxHeadDim, "]");
  REMOE_CHECK(kv_heads >= 1 && q_heads % kv_heads == 0, name, ": q_heads ", q_heads,
              " must be a multiple of kv_heads ", kv_heads);
  REMOE_CHECK(batch <= 65535 && q_heads <= 65535, name, ": batch ", batch, " or heads ", q_heads,
              " exceed the grid");
  dims = {seq, q_heads, kv_heads, int(head_dim), float(1.0 / std::sqrt(double(head_dim)))};
  return batch > 0 && seq > 0 && q_heads > 0;
}

// Dynamic shared memory above 48 KiB must be opted into per kernel (Dh = 128 needs ~66 KiB).
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                       int64_t head_dim, cudaStream_t stream) {
  NvtxRange range("attention_forward");
  Dims dims;
  if (!make_dims(dims, "attention_forward", batch, seq, q_heads, kv_heads, head_dim)) return;
  const dim3 grid{unsigned((seq + kTile - 1) / kTile), unsigned(q_heads), unsigned(batch)};
  const size_t shared = sizeof(float) * size_t(kTile * head_dim * 2 + kTile * (head_dim + 1));
  allow_shared(attention_forward_kernel, shared);
  attention_forward_kernel<<<grid, kThreads, shared, stream>>>(out, lse, q, k, v, dims);
  CUDA_CHECK(cudaGetLastError());
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                        int64_t head_dim, cudaStream_t stream) {
  NvtxRange range("attention_backward");
  Dims dims;
  if (!make_dims(dims, "attention_backward", batch, seq, q_heads, kv_heads, head_dim)) return;
  if (dq == nullptr && dk == nullptr && dv == nullptr) return;
  REMOE_CHECK(out != nullptr && lse != nullptr, "attention_backward on the GPU needs the forward's out and lse");

  const int64_t n_rows = batch * seq * q_heads;
  detail::Scratch d_rows(sizeof(float) * size_t(n_rows), stream);
  attention_row_dot_kernel<<<detail::grid_for(n_rows, kWarps), kThreads, 0, stream>>>(d_rows.as<float>(), dout,
                                                                                        out, batch, dims);
  CUDA_CHECK(cudaGetLastError());

  const int64_t tiles = (seq + kTile - 1) / kTile;
  if (dk != nullptr || dv != nullptr) {
    const dim3 grid{unsigned(tiles), unsigned(kv_heads), unsigned(batch)};
    const size_t shared = sizeof(float) * size_t(2 * kTile * head_dim + 2 * kTile * (head_dim + 1) + 2 * kTile);
    allow_shared(attention_dkdv_kernel, shared);
    attention_dkdv_kernel<<<grid, kThreads, shared, stream>>>(dk, dv, dout, q, k, v, lse, d_rows.as<float>(), dims);
    CUDA_CHECK(cudaGetLastError());
  }
  if (dq != nullptr) {
    const dim3 grid{unsigned(tiles), unsigned(q_heads), unsigned(batch)};
    const size_t shared = sizeof(float) * size_t(2 * kTile * head_dim + 2 * kTile * (head_dim + 1));
    allow_shared(attention_dq_kernel, shared);
    attention_dq_kernel<<<grid, kThreads, shared, stream>>>(dq, dout, q, k, v, lse, d_rows.as<float>(), dims);
    CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace remoe::cuda
