// Causal GQA attention in bf16 on tensor cores (FlashAttention-2's scheme), the kernels behind
// kernels/attention.h's bf16 launchers. Contracts as there; head_dim 64, 96 or 128.
//
// Every product is mma.sync m16n8k16 (bf16 in, f32 accumulate; sm_80 and later, so sm_90a too)
// with operands moved from shared memory by ldmatrix. A block of 4 warps takes 64 rows of its
// side (queries, or keys for dK/dV); each warp owns 16 of them, and its C fragments are the
// rows it owns, so the softmax statistics of a row live in the 4 threads of one quad (two
// shuffles reduce a row). A C fragment pair (n-tiles 2t, 2t+1) is the A fragment of the next
// product's k-step t: P and dS go from the scores to the PV, dV, dQ and dK products in
// registers, rounded to bf16 once.
//   forward     grid (query tiles, Hq, B): walk the key tiles up to the diagonal with the online
//               softmax in base 2; out in bf16, lse (natural log, f32) for the backward.
//   row_dot     Δ_i = Σ_d dO_id · O_id in f32, one warp per row.
//   dk_dv       grid (key tiles, Hkv, B): for each query head of the group in order, for each
//               query tile from the diagonal on, recompute P from lse; dV += Pᵀ dO,
//               dPᵀ = V dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − Δ), dK += dSᵀ Q. No atomics.
//   dq          grid (query tiles, Hq, B): the same recomputation over the key tiles up to the
//               diagonal; dQ += dS K.
// Tiles load with 16-byte vectors (rows past S as zeros) into shared memory rows padded by 16
// bytes, so ldmatrix's eight row addresses fall on distinct banks.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"

namespace remoe::cuda {
namespace {

using namespace detail;

constexpr int kTile = 64;     // rows of a block's side, and keys (or queries) per step
constexpr int kWarps = 4;     // each owns 16 rows
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;

// --- PTX: ldmatrix and mma.sync ----------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

// Four 8×8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(row)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(row)));
}

// c += a · b: a 16×16 (row), b 16×8 (col), c 16×8 f32.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (the low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

// --- shared-memory tiles -----------------------------------------------------------------

// rows [row0, row0 + 64) of a (·, S, H, D) tensor at head h into t (rows ≥ S as zeros).
template <int D>
__device__ void load_tile(__nv_bfloat16 (*t)[D + 8], const __nv_bfloat16* x, int64_t b, int row0,
                          int S, int H, int h) {
  constexpr int kVecs = D / 8;  // 16-byte vectors per row
  for (int i = threadIdx.x; i < kTile * kVecs; i += kThreads) {
    const int r = i / kVecs, c = (i % kVecs) * 8, s = row0 + r;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (s < S) v = *reinterpret_cast<const uint4*>(x + ((b * S + s) * H + h) * int64_t(D) + c);
    *reinterpret_cast<uint4*>(&t[r][c]) = v;
  }
}

// A fragments of rows [r0, r0 + 16) × k-step ks of a tile stored (row, k).
template <int D>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], __nv_bfloat16 (*t)[D + 8], int r0, int ks) {
  const int l = threadIdx.x % 32;
  ldsm_x4(a, &t[r0 + (l % 8) + ((l / 8) % 2) * 8][ks * 16 + (l / 16) * 8]);
}

// B fragments (n-tiles n0 and n0 + 8, k-step ks) of a tile stored (n, k): b[0..1] for n0,
// b[2..3] for n0 + 8. (The K tile in Q·Kᵀ: n = key, k = d.)
template <int D>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], __nv_bfloat16 (*t)[D + 8], int n0, int ks) {
  const int l = threadIdx.x % 32;
  ldsm_x4(b, &t[n0 + (l % 8) + (l / 16) * 8][ks * 16 + ((l / 8) % 2) * 8]);
}

// B fragments (n-tiles n0 and n0 + 8, k-step ks) of a tile stored (k, n), transposed by
// ldmatrix. (The V tile in P·V: k = key, n = d.)
template <int D>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], __nv_bfloat16 (*t)[D + 8], int n0, int ks) {
  const int l = threadIdx.x % 32;
  ldsm_x4_trans(b, &t[ks * 16 + (l % 8) + ((l / 8) % 2) * 8][n0 + (l / 16) * 8]);
}

// acc (16 × 64, 8 n-tiles) = rows [r0, r0 + 16) of a · (the 64 rows of b)ᵀ over D.
template <int D>
__device__ __forceinline__ void scores(float (&acc)[8][4], __nv_bfloat16 (*a)[D + 8], int r0,
                                       __nv_bfloat16 (*b)[D + 8]) {
#pragma unroll
  for (int n = 0; n < 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t af[4];
    load_a<D>(af, a, r0, ks);
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t bf[4];
      load_b_nk<D>(bf, b, np * 16, ks);
      mma(acc[2 * np], af, bf[0], bf[1]);
      mma(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// acc (16 × D) += p (16 × 64, as C fragments) · t (64 rows (k) × D, stored (k, n)).
template <int D>
__device__ __forceinline__ void accumulate_pv(float (&acc)[D / 8][4], const float (&p)[8][4],
                                              __nv_bfloat16 (*t)[D + 8]) {
#pragma unroll
  for (int kt = 0; kt < 4; ++kt) {
    const uint32_t a[4] = {pack_bf16(p[2 * kt][0], p[2 * kt][1]), pack_bf16(p[2 * kt][2], p[2 * kt][3]),
                           pack_bf16(p[2 * kt + 1][0], p[2 * kt + 1][1]),
                           pack_bf16(p[2 * kt + 1][2], p[2 * kt + 1][3])};
#pragma unroll
    for (int dn = 0; dn < D / 16; ++dn) {
      uint32_t bf[4];
      load_b_kn<D>(bf, t, dn * 16, kt);
      mma(acc[2 * dn], a, bf[0], bf[1]);
      mma(acc[2 * dn + 1], a, bf[2], bf[3]);
    }
  }
}

// Stores acc · scale (16 rows from row0, D columns) as bf16 rows of a (·, S, H, D) tensor.
template <int D>
__device__ __forceinline__ void store_rows(__nv_bfloat16* y, const float (&acc)[D / 8][4], float scale,
                                           int64_t b, int row0, int S, int H, int h) {
  const int l = threadIdx.x % 32, g = l / 4, t4 = l % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int s = row0 + g + half * 8;
    if (s >= S) continue;
    __nv_bfloat16* out = y + ((b * S + s) * H + h) * int64_t(D);
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<__nv_bfloat162*>(out + n * 8 + t4 * 2) =
          __floats2bfloat162_rn(acc[n][2 * half] * scale, acc[n][2 * half + 1] * scale);
  }
}

template <int D>
constexpr int tile_bytes() {
  return kTile * (D + 8) * int(sizeof(__nv_bfloat16));
}

// --- forward -----------------------------------------------------------------------------

template <int D>
__global__ void __launch_bounds__(kThreads)
flash_forward_kernel(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q, const __nv_bfloat16* k,
                     const __nv_bfloat16* v, int S, int Hq, int Hkv) {
  extern __shared__ __align__(16) unsigned char smem[];
  using Rows = __nv_bfloat16(*)[D + 8];
  Rows sq = reinterpret_cast<Rows>(smem);
  Rows sk = reinterpret_cast<Rows>(smem + tile_bytes<D>());
  Rows sv = reinterpret_cast<Rows>(smem + 2 * tile_bytes<D>());
  const int m_tile = blockIdx.x, h = blockIdx.y, hk = h / (Hq / Hkv);
  const int64_t b = blockIdx.z;
  const int warp = threadIdx.x / 32, l = threadIdx.x % 32, g = l / 4, t4 = l % 4;
  const float scale_log2 = kLog2e / sqrtf(float(D));

  load_tile<D>(sq, q, b, m_tile * kTile, S, Hq, h);
  float acc[D / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f};
  const int q_row[2] = {m_tile * kTile + warp * 16 + g, m_tile * kTile + warp * 16 + g + 8};

  for (int n_tile = 0; n_tile <= m_tile; ++n_tile) {
    __syncthreads();  // the previous tiles are no longer read (and sq is written)
    load_tile<D>(sk, k, b, n_tile * kTile, S, Hkv, hk);
    load_tile<D>(sv, v, b, n_tile * kTile, S, Hkv, hk);
    __syncthreads();
    float s[8][4];
    scores<D>(s, sq, warp * 16, sk);
    // Scale to base 2, mask keys past the diagonal or past S, and take each row's new maximum.
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = n_tile * kTile + n * 8 + t4 * 2 + (e % 2), half = e / 2;
        s[n][e] = (key <= q_row[half] && key < S) ? s[n][e] * scale_log2 : -INFINITY;
        tile_max[half] = fmaxf(tile_max[half], s[n][e]);
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      tile_max[half] = fmaxf(tile_max[half], __shfl_xor_sync(0xffffffffu, tile_max[half], 1));
      tile_max[half] = fmaxf(tile_max[half], __shfl_xor_sync(0xffffffffu, tile_max[half], 2));
      // Each processed tile holds key n_tile · 64 ≤ the row's query (and < S): finite.
      const float new_max = fmaxf(row_max[half], tile_max[half]);
      const float rescale = exp2f(row_max[half] - new_max);  // 0 on the first tile
      row_max[half] = new_max;
      row_sum[half] *= rescale;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) acc[n][2 * half] *= rescale, acc[n][2 * half + 1] *= rescale;
    }
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - row_max[e / 2]);
        row_sum[e / 2] += s[n][e];
      }
    accumulate_pv<D>(acc, s, sv);
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    row_sum[half] += __shfl_xor_sync(0xffffffffu, row_sum[half], 1);
    row_sum[half] += __shfl_xor_sync(0xffffffffu, row_sum[half], 2);
  }
  const float inv[2] = {1.f / row_sum[0], 1.f / row_sum[1]};
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] *= inv[0], acc[n][1] *= inv[0], acc[n][2] *= inv[1], acc[n][3] *= inv[1];
  store_rows<D>(out, acc, 1.f, b, m_tile * kTile + warp * 16, S, Hq, h);
  if (lse != nullptr && t4 == 0)
#pragma unroll
    for (int half = 0; half < 2; ++half)
      if (q_row[half] < S)
        lse[(b * Hq + h) * S + q_row[half]] = (row_max[half] + log2f(row_sum[half])) / kLog2e;
}

// --- backward ----------------------------------------------------------------------------

// delta[(b, h, s)] = Σ_d dout · out, one warp per row.
template <int D>
__global__ void row_dot_kernel(float* delta, const __nv_bfloat16* dout, const __nv_bfloat16* out,
                               int64_t rows, int S, int Hq) {
  const int64_t row = blockIdx.x * int64_t(kThreads / 32) + threadIdx.x / 32;  // (b, s, h)
  if (row >= rows) return;
  const int l = threadIdx.x % 32;
  float sum = 0.f;
  for (int d = l; d < D; d += 32)
    sum += __bfloat162float(dout[row * D + d]) * __bfloat162float(out[row * D + d]);
#pragma unroll
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const int64_t h = row % Hq, s = (row / Hq) % S, b = row / (int64_t(Hq) * S);
  if (l == 0) delta[(b * Hq + h) * S + s] = sum;
}

// P (or Pᵀ) of one tile from the raw scores: exp2(s · scale_log2 − lse_log2), zero where
// masked. For dK/dV the C rows are keys and the columns queries (lse_log2 by column: the
// tile's 64 queries); for dQ the rows are queries (row_lse_log2: this thread's two rows).
template <bool kRowsAreKeys>
__device__ __forceinline__ void probabilities(float (&s)[8][4], int row_base, int col_base,
                                              const float* lse_log2, const float (&row_lse_log2)[2],
                                              int S, float scale_log2) {
  const int l = threadIdx.x % 32, g = l / 4, t4 = l % 4;
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = row_base + g + (e / 2) * 8, col = col_base + n * 8 + t4 * 2 + (e % 2);
      const int query = kRowsAreKeys ? col : row, key = kRowsAreKeys ? row : col;
      const bool keep = key <= query && query < S && key < S;
      const float m = kRowsAreKeys ? lse_log2[n * 8 + t4 * 2 + (e % 2)] : row_lse_log2[e / 2];
      s[n][e] = keep ? exp2f(s[n][e] * scale_log2 - m) : 0.f;
    }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
flash_dk_dv_kernel(__nv_bfloat16* dk, __nv_bfloat16* dv, const __nv_bfloat16* dout, const __nv_bfloat16* q,
                   const __nv_bfloat16* k, const __nv_bfloat16* v, const float* lse, const float* delta,
                   int S, int Hq, int Hkv) {
  extern __shared__ __align__(16) unsigned char smem[];
  using Rows = __nv_bfloat16(*)[D + 8];
  Rows sk = reinterpret_cast<Rows>(smem);
  Rows sv = reinterpret_cast<Rows>(smem + tile_bytes<D>());
  Rows sq = reinterpret_cast<Rows>(smem + 2 * tile_bytes<D>());
  Rows sdo = reinterpret_cast<Rows>(smem + 3 * tile_bytes<D>());
  float* s_lse = reinterpret_cast<float*>(smem + 4 * tile_bytes<D>());  // log2 units
  float* s_delta = s_lse + kTile;
  const int n_tile = blockIdx.x, hk = blockIdx.y, group = Hq / Hkv;
  const int64_t b = blockIdx.z;
  const int warp = threadIdx.x / 32, t4 = threadIdx.x % 4;
  const float scale_log2 = kLog2e / sqrtf(float(D));
  const int key0 = n_tile * kTile + warp * 16;  // this warp's first key
  const int m_tiles = (S + kTile - 1) / kTile;

  load_tile<D>(sk, k, b, n_tile * kTile, S, Hkv, hk);
  load_tile<D>(sv, v, b, n_tile * kTile, S, Hkv, hk);
  float acc_dk[D / 8][4] = {}, acc_dv[D / 8][4] = {};
  for (int h = hk * group; h < (hk + 1) * group; ++h)
    for (int m_tile = n_tile; m_tile < m_tiles; ++m_tile) {
      __syncthreads();  // the previous query tile is no longer read
      load_tile<D>(sq, q, b, m_tile * kTile, S, Hq, h);
      load_tile<D>(sdo, dout, b, m_tile * kTile, S, Hq, h);
      for (int i = threadIdx.x; i < kTile; i += kThreads) {
        const int s = m_tile * kTile + i;
        s_lse[i] = s < S ? lse[(b * Hq + h) * S + s] * kLog2e : 0.f;
        s_delta[i] = s < S ? delta[(b * Hq + h) * S + s] : 0.f;
      }
      __syncthreads();
      float p[8][4];  // Pᵀ: rows this warp's keys, columns the tile's queries
      scores<D>(p, sk, warp * 16, sq);
      probabilities<true>(p, key0, m_tile * kTile, s_lse, {0.f, 0.f}, S, scale_log2);
      accumulate_pv<D>(acc_dv, p, sdo);  // dV += Pᵀ dO
      float dp[8][4];  // dPᵀ = V dOᵀ
      scores<D>(dp, sv, warp * 16, sdo);
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[n][e] = p[n][e] * (dp[n][e] - s_delta[n * 8 + t4 * 2 + (e % 2)]);
      accumulate_pv<D>(acc_dk, dp, sq);  // dK += dSᵀ Q (scaled below)
    }
  store_rows<D>(dk, acc_dk, 1.f / sqrtf(float(D)), b, key0, S, Hkv, hk);
  store_rows<D>(dv, acc_dv, 1.f, b, key0, S, Hkv, hk);
}

template <int D>
__global__ void __launch_bounds__(kThreads)
flash_dq_kernel(__nv_bfloat16* dq, const __nv_bfloat16* dout, const __nv_bfloat16* q, const __nv_bfloat16* k,
                const __nv_bfloat16* v, const float* lse, const float* delta, int S, int Hq, int Hkv) {
  extern __shared__ __align__(16) unsigned char smem[];
  using Rows = __nv_bfloat16(*)[D + 8];
  Rows sq = reinterpret_cast<Rows>(smem);
  Rows sdo = reinterpret_cast<Rows>(smem + tile_bytes<D>());
  Rows sk = reinterpret_cast<Rows>(smem + 2 * tile_bytes<D>());
  Rows sv = reinterpret_cast<Rows>(smem + 3 * tile_bytes<D>());
  const int m_tile = blockIdx.x, h = blockIdx.y, hk = h / (Hq / Hkv);
  const int64_t b = blockIdx.z;
  const int warp = threadIdx.x / 32, g = threadIdx.x % 32 / 4;
  const float scale_log2 = kLog2e / sqrtf(float(D));
  const int row0 = m_tile * kTile + warp * 16;  // this warp's first query

  load_tile<D>(sq, q, b, m_tile * kTile, S, Hq, h);
  load_tile<D>(sdo, dout, b, m_tile * kTile, S, Hq, h);
  float row_lse[2], row_delta[2];  // this thread's rows g and g + 8 (log2 units for lse)
  for (int half = 0; half < 2; ++half) {
    const int s = row0 + g + half * 8;
    row_lse[half] = s < S ? lse[(b * Hq + h) * S + s] * kLog2e : 0.f;
    row_delta[half] = s < S ? delta[(b * Hq + h) * S + s] : 0.f;
  }
  float acc[D / 8][4] = {};
  for (int n_tile = 0; n_tile <= m_tile; ++n_tile) {
    __syncthreads();
    load_tile<D>(sk, k, b, n_tile * kTile, S, Hkv, hk);
    load_tile<D>(sv, v, b, n_tile * kTile, S, Hkv, hk);
    __syncthreads();
    float p[8][4];
    scores<D>(p, sq, warp * 16, sk);
    probabilities<false>(p, row0, n_tile * kTile, nullptr, row_lse, S, scale_log2);
    float ds[8][4];  // dP = dO Vᵀ, then dS = P ⊙ (dP − Δ)
    scores<D>(ds, sdo, warp * 16, sv);
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - row_delta[e / 2]);
    accumulate_pv<D>(acc, ds, sk);  // dQ += dS K (scaled below)
  }
  store_rows<D>(dq, acc, 1.f / sqrtf(float(D)), b, row0, S, Hq, h);
}

// --- launchers ---------------------------------------------------------------------------

template <typename Kernel>
void set_smem(Kernel kernel, int bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <int D>
void forward_d(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int64_t B,
               int64_t S, int64_t Hq, int64_t Hkv, cudaStream_t stream) {
  const int smem = 3 * tile_bytes<D>();
  set_smem(flash_forward_kernel<D>, smem);
  const dim3 grid(unsigned((S + kTile - 1) / kTile), unsigned(Hq), unsigned(B));
  flash_forward_kernel<D><<<grid, kThreads, smem, stream>>>(dev(out), lse, dev(q), dev(k), dev(v), int(S),
                                                            int(Hq), int(Hkv));
  CUDA_CHECK(cudaGetLastError());
}

template <int D>
void backward_d(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                const bf16* v, const bf16* out, const float* lse, int64_t B, int64_t S, int64_t Hq,
                int64_t Hkv, cudaStream_t stream) {
  const int64_t rows = B * S * Hq;
  Scratch delta_buf(size_t(rows) * sizeof(float), stream);
  float* delta = delta_buf.as<float>();
  row_dot_kernel<D><<<unsigned((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      delta, dev(dout), dev(out), rows, int(S), int(Hq));
  CUDA_CHECK(cudaGetLastError());
  const unsigned tiles = unsigned((S + kTile - 1) / kTile);
  // dK and dV are written together; a null one gets a scratch buffer.
  Scratch spare(dk == nullptr || dv == nullptr ? size_t(B * S * Hkv * D) * sizeof(bf16) : 0, stream);
  if (dk != nullptr || dv != nullptr) {
    const int smem = 4 * tile_bytes<D>() + 2 * kTile * int(sizeof(float));
    set_smem(flash_dk_dv_kernel<D>, smem);
    flash_dk_dv_kernel<D><<<dim3(tiles, unsigned(Hkv), unsigned(B)), kThreads, smem, stream>>>(
        dev(dk != nullptr ? dk : spare.as<bf16>()), dev(dv != nullptr ? dv : spare.as<bf16>()), dev(dout),
        dev(q), dev(k), dev(v), lse, delta, int(S), int(Hq), int(Hkv));
    CUDA_CHECK(cudaGetLastError());
  }
  if (dq != nullptr) {
    const int smem = 4 * tile_bytes<D>();
    set_smem(flash_dq_kernel<D>, smem);
    flash_dq_kernel<D><<<dim3(tiles, unsigned(Hq), unsigned(B)), kThreads, smem, stream>>>(
        dev(dq), dev(dout), dev(q), dev(k), dev(v), lse, delta, int(S), int(Hq), int(Hkv));
    CUDA_CHECK(cudaGetLastError());
  }
}

void check_bf16_args(const char* op, int64_t S, int64_t Hq, int64_t Hkv, int64_t D,
                     std::initializer_list<const void*> buffers) {
  REMOE_CHECK(attention_bf16_supported(D), op, ": the bf16 kernels take head_dim 64, 96 or 128, got ", D);
  REMOE_CHECK(Hkv > 0 && Hq % Hkv == 0, op, ": query heads (", Hq, ") must be a multiple of kv heads (", Hkv, ")");
  REMOE_CHECK(S <= (int64_t(1) << 30) && Hq < 65536 && Hkv < 65536, op, ": seq ", S, " or heads ", Hq,
              " exceed the grid");
  for (const void* p : buffers)
    REMOE_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, op,
                ": bf16 buffers must be 16-byte aligned (the tiles load 16-byte vectors)");
}

}  // namespace

bool attention_bf16_supported(int64_t head_dim) {
  return head_dim == 64 || head_dim == 96 || head_dim == 128;
}

void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                       int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                       int64_t head_dim, cudaStream_t stream) {
  NvtxRange range("attention_forward");
  if (batch == 0 || seq == 0 || q_heads == 0) return;
  check_bf16_args("attention_forward", seq, q_heads, kv_heads, head_dim, {out, q, k, v});
  switch (head_dim) {
    case 64: return forward_d<64>(out, lse, q, k, v, batch, seq, q_heads, kv_heads, stream);
    case 96: return forward_d<96>(out, lse, q, k, v, batch, seq, q_heads, kv_heads, stream);
    default: return forward_d<128>(out, lse, q, k, v, batch, seq, q_heads, kv_heads, stream);
  }
}

void attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                        const bf16* k, const bf16* v, const bf16* out, const float* lse,
                        int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                        int64_t head_dim, cudaStream_t stream) {
  NvtxRange range("attention_backward");
  if (batch == 0 || seq == 0 || q_heads == 0 || (dq == nullptr && dk == nullptr && dv == nullptr)) return;
  check_bf16_args("attention_backward", seq, q_heads, kv_heads, head_dim, {dq, dk, dv, dout, q, k, v, out});
  switch (head_dim) {
    case 64: return backward_d<64>(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, q_heads, kv_heads, stream);
    case 96: return backward_d<96>(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, q_heads, kv_heads, stream);
    default: return backward_d<128>(dq, dk, dv, dout, q, k, v, out, lse, batch, seq, q_heads, kv_heads, stream);
  }
}

}  // namespace remoe::cuda
