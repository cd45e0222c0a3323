// Dense GEMM on the GPU: C = op(A) · op(B).
//   op(A): (M, K), stored (M, K) or (K, M) when trans_a; op(B): (K, N), stored (K, N) or (N, K)
//   when trans_b; C: (M, N) row-major, overwritten.
// Two first versions, both plain shared-memory tiling (no cp.async, no wgmma yet):
//   matmul_f32_kernel: CUDA cores, 64×64 tile per block of 256 threads, 4×4 outputs per thread,
//     each output summed over k in ascending order with FMAs (the CPU sums in the same order) —
//     or, for few tiles over a long k (K ≥ 4096), in up to 32 slices of k whose partial sums a
//     second kernel adds in slice order (split-K; deterministic);
//   matmul_bf16_kernel: tensor cores through WMMA 16×16×16 (bf16 in, f32 accumulate), 64×64 tile
//     per block of 4 warps, each warp a 32×32 quarter (2×2 fragments), k in steps of 32; the f32
//     tile goes through shared memory so the tails can be stored element by element.
// Both load tiles element by element, consecutive threads along the operand's contiguous axis
// (coalesced for either transpose), and zero-fill what lies past M, N or K.
// On a Hopper GPU the bf16 x·wᵀ of every linear layer (trans_a = false, trans_b = true, C in
// bf16), its input gradient and its weight gradient run on the grouped GEMM's sm_90a kernels as
// one group of M rows (kernels/cuda/grouped_matmul_sm90.cu), where those apply (K and N
// multiples of 8, 16-byte aligned buffers) and REMOE_GROUPED_GEMM is not "tiled".
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <limits>

#include "kernels/check.h"
#include "kernels/cuda/grouped_matmul_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/grouped_matmul.h"
#include "kernels/nvtx.h"
#include "kernels/matmul.h"

namespace remoe::cuda {
namespace {

using namespace detail;
namespace wmma = nvcuda::wmma;

// --- f32, CUDA cores ---------------------------------------------------------------------
constexpr int kF32Tile = 64;     // M and N per block
constexpr int kF32TileK = 16;
constexpr int kF32Threads = 256;  // 16 × 16 threads, 4 × 4 outputs each

// Block z of gridDim.z sums k in [z·k_chunk, (z + 1)·k_chunk) into c + z·M·N (split-K: the
// partial sums, added by split_k_sum_kernel; gridDim.z = 1 sums every k straight into c).
__global__ void __launch_bounds__(kF32Threads)
matmul_f32_kernel(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K,
                  int64_t k_chunk, bool trans_a, bool trans_b) {
  // k-major tiles: as[p][i] = op(A)(i0 + i, p0 + p), bs[p][j] = op(B)(p0 + p, j0 + j).
  // NOTE: +1 column so the column-wise stores of the non-transposed A do not all hit one bank.
  __shared__ float as[kF32TileK][kF32Tile + 1];
  __shared__ float bs[kF32TileK][kF32Tile + 1];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t i0 = int64_t(blockIdx.y) * kF32Tile, j0 = int64_t(blockIdx.x) * kF32Tile;
  const int64_t k_begin = int64_t(blockIdx.z) * k_chunk, k_end = min(K, k_begin + k_chunk);
  c += int64_t(blockIdx.z) * M * N;
  float acc[4][4] = {};
  for (int64_t p0 = k_begin; p0 < k_end; p0 += kF32TileK) {
    for (int e = tid; e < kF32Tile * kF32TileK; e += kF32Threads) {
      const int ai = trans_a ? e % kF32Tile : e / kF32TileK;
      const int ap = trans_a ? e / kF32Tile : e % kF32TileK;
      const int64_t i = i0 + ai, p = p0 + ap;
      as[ap][ai] = (i < M && p < k_end) ? (trans_a ? a[p * M + i] : a[i * K + p]) : 0.f;
      const int bj = trans_b ? e / kF32TileK : e % kF32Tile;
      const int bp = trans_b ? e % kF32TileK : e / kF32Tile;
      const int64_t j = j0 + bj, q = p0 + bp;
      bs[bp][bj] = (j < N && q < k_end) ? (trans_b ? b[j * K + q] : b[q * N + j]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int p = 0; p < kF32TileK; ++p) {
      float av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) av[r] = as[p][ty + 16 * r];
#pragma unroll
      for (int s = 0; s < 4; ++s) bv[s] = bs[p][tx + 16 * s];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int s = 0; s < 4; ++s) acc[r][s] = fmaf(av[r], bv[s], acc[r][s]);
    }
    __syncthreads();  // the next tile overwrites as and bs
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const int64_t i = i0 + ty + 16 * r, j = j0 + tx + 16 * s;
      if (i < M && j < N) c[i * N + j] = acc[r][s];
    }
}

// c[i] = Σ_z partial[z·n + i], z ascending (deterministic).
__global__ void split_k_sum_kernel(float* c, const float* partial, int64_t n, int splits) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int z = 0; z < splits; ++z) sum += partial[z * n + i];
    c[i] = sum;
  }
}

// Split-K for outputs too small to fill the GPU over long reductions (the router's weight
// gradient: (E, d) summed over every token): at most kMaxSplits slices of ≥ kMinSplitK each.
// Below kMinSplitK · 2 the sum runs in k order in one block, as the CPU's.
constexpr int64_t kMinSplitK = 2048;
constexpr int kMaxSplits = 32;

// --- bf16, tensor cores (WMMA) -----------------------------------------------------------
constexpr int kTileM = 64, kTileN = 64, kTileK = 32;
constexpr int kWmma = 16;            // the fragment's M = N = K
constexpr int kBf16Threads = 128;    // 4 warps in a 2 × 2 grid of 32 × 32 quarters
// NOTE: padding keeps fragment rows on different banks; WMMA needs ldm a multiple of 8 elements
// for 16-bit types and of 4 for f32, and 32-byte aligned fragment pointers.
constexpr int kLdA = kTileK + 8, kLdB = kTileN + 8, kLdC = kTileN + 4;
static_assert(kLdA % 8 == 0 && kLdB % 8 == 0 && kLdC % 4 == 0, "WMMA leading dimensions");
static_assert((kWmma * kLdA * 2) % 32 == 0 && (kWmma * kLdB * 2) % 32 == 0 && (kWmma * kLdC * 4) % 32 == 0,
              "fragment row offsets must stay 32-byte aligned");
static_assert(kTileM * kLdA * 2 + kTileK * kLdB * 2 + kTileM * kLdC * 4 <= 48 * 1024,
              "the bf16 tiles must fit in 48 KiB of static shared memory");

template <typename Out>
__global__ void __launch_bounds__(kBf16Threads)
matmul_bf16_kernel(Out* c, const __nv_bfloat16* a, const __nv_bfloat16* b, int64_t M, int64_t N,
                   int64_t K, bool trans_a, bool trans_b) {
  __shared__ __align__(128) __nv_bfloat16 as[kTileM][kLdA];  // op(A) tile, (i, p)
  __shared__ __align__(128) __nv_bfloat16 bs[kTileK][kLdB];  // op(B) tile, (p, j)
  __shared__ __align__(128) float cs[kTileM][kLdC];          // the block's f32 result
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;
  const int64_t i0 = int64_t(blockIdx.y) * kTileM, j0 = int64_t(blockIdx.x) * kTileN;
  const __nv_bfloat16 zero = __float2bfloat16(0.f);

  wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> acc[2][2];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int s = 0; s < 2; ++s) wmma::fill_fragment(acc[r][s], 0.f);

  for (int64_t p0 = 0; p0 < K; p0 += kTileK) {
    for (int e = tid; e < kTileM * kTileK; e += kBf16Threads) {
      const int ai = trans_a ? e % kTileM : e / kTileK;
      const int ap = trans_a ? e / kTileM : e % kTileK;
      const int64_t i = i0 + ai, p = p0 + ap;
      as[ai][ap] = (i < M && p < K) ? (trans_a ? a[p * M + i] : a[i * K + p]) : zero;
    }
    for (int e = tid; e < kTileK * kTileN; e += kBf16Threads) {
      const int bj = trans_b ? e / kTileK : e % kTileN;
      const int bp = trans_b ? e % kTileK : e / kTileN;
      const int64_t j = j0 + bj, q = p0 + bp;
      bs[bp][bj] = (j < N && q < K) ? (trans_b ? b[j * K + q] : b[q * N + j]) : zero;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += kWmma) {
      wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, __nv_bfloat16, wmma::row_major> fb[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) wmma::load_matrix_sync(fa[r], &as[wm * 32 + r * kWmma][kk], kLdA);
#pragma unroll
      for (int s = 0; s < 2; ++s) wmma::load_matrix_sync(fb[s], &bs[kk][wn * 32 + s * kWmma], kLdB);
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int s = 0; s < 2; ++s) wmma::mma_sync(acc[r][s], fa[r], fb[s], acc[r][s]);
    }
    __syncthreads();  // the next tile overwrites as and bs
  }
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int s = 0; s < 2; ++s)
      wmma::store_matrix_sync(&cs[wm * 32 + r * kWmma][wn * 32 + s * kWmma], acc[r][s], kLdC,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < kTileM * kTileN; e += kBf16Threads) {
    const int ci = e / kTileN, cj = e % kTileN;
    const int64_t i = i0 + ci, j = j0 + cj;
    if (i < M && j < N) c[i * N + j] = from_f32<Out>(cs[ci][cj]);
  }
}

dim3 grid_of(int64_t M, int64_t N, int tile_m, int tile_n) {
  const int64_t gm = (M + tile_m - 1) / tile_m, gn = (N + tile_n - 1) / tile_n;
  REMOE_CHECK(gm <= 65535, "matmul: M = ", M, " exceeds the grid (", gm, " row tiles)");
  return dim3(unsigned(gn), unsigned(gm));
}

void launch(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
            bool trans_b, cudaStream_t stream) {
  dim3 grid = grid_of(M, N, kF32Tile, kF32Tile);
  const int64_t blocks = int64_t(grid.x) * grid.y;
  // Enough slices for about two blocks per SM (132 on an H100/H200), each ≥ kMinSplitK long.
  // NOTE: a constant, not the device's SM count: the slices fix the order of the sums, so the
  // same shapes give the same bits on every GPU.
  const int64_t splits = std::min<int64_t>({kMaxSplits, K / kMinSplitK, std::max<int64_t>(1, 264 / blocks)});
  if (splits <= 1) {
    matmul_f32_kernel<<<grid, kF32Threads, 0, stream>>>(c, a, b, M, N, K, K, trans_a, trans_b);
    CUDA_CHECK(cudaGetLastError());
    return;
  }
  const int64_t chunk = (K + splits - 1) / splits;
  Scratch partial(size_t(splits * M * N) * sizeof(float), stream);
  grid.z = unsigned(splits);
  matmul_f32_kernel<<<grid, kF32Threads, 0, stream>>>(partial.as<float>(), a, b, M, N, K, chunk, trans_a, trans_b);
  CUDA_CHECK(cudaGetLastError());
  split_k_sum_kernel<<<grid_for(M * N, 256), 256, 0, stream>>>(c, partial.as<float>(), M * N, int(splits));
  CUDA_CHECK(cudaGetLastError());
}

template <typename Out>
void launch(Out* c, const bf16* a, const bf16* b, int64_t M, int64_t N, int64_t K, bool trans_a,
            bool trans_b, cudaStream_t stream) {
  matmul_bf16_kernel<<<grid_of(M, N, kTileM, kTileN), kBf16Threads, 0, stream>>>(dev(c), dev(a), dev(b), M, N, K,
                                                                                 trans_a, trans_b);
  CUDA_CHECK(cudaGetLastError());
}

// Whether C = A·Bᵀ in bf16 runs on the Hopper kernels as one group of M rows.
bool hopper_linear(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                   std::initializer_list<const void*> buffers) {
  if (trans_a || !trans_b || M == 0 || N == 0 || K == 0) return false;
  if (M > std::numeric_limits<int32_t>::max()) return false;  // the kernels' row offsets are int32
  if (grouped_matmul_impl_from_env() == GroupedMatmulImpl::tiled) return false;
  return grouped_matmul_hopper_unsupported<bf16>(K, N, buffers).empty();
}

template <typename Out, typename In>
void forward(Out* c, const In* a, const In* b, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
             cudaStream_t stream) {
  NvtxRange range("matmul_forward");
  if (M == 0 || N == 0) return;
  if constexpr (std::is_same_v<Out, bf16> && std::is_same_v<In, bf16>) {
    if (hopper_linear(trans_a, trans_b, M, N, K, {c, a, b}))
      return sm90_grouped_forward(c, a, b, nullptr, 1, K, N, M, stream);
  }
  launch(c, a, b, M, N, K, trans_a, trans_b, stream);  // K = 0 writes zeros
}

// dA = dC · op(B)ᵀ and dB = op(A)ᵀ · dC in their stored layouts, as the CPU reference.
template <typename Out, typename In>
void backward(Out* da, Out* db, const In* dc, const In* a, const In* b, int64_t M, int64_t N, int64_t K,
              bool trans_a, bool trans_b, cudaStream_t stream) {
  NvtxRange range("matmul_backward");
  if constexpr (std::is_same_v<Out, bf16> && std::is_same_v<In, bf16>) {
    // dA = dC·B is the grouped GEMM's dx, dB = dCᵀ·A its dw (B = w, A = x).
    if (hopper_linear(trans_a, trans_b, M, N, K, {da, db, dc, a, b})) {
      if (da != nullptr) sm90_grouped_dx(da, dc, b, nullptr, 1, K, N, M, stream);
      if (db != nullptr) sm90_grouped_dw(db, dc, a, nullptr, 1, K, N, M, stream);
      return;
    }
  }
  if (da != nullptr) {
    if (!trans_a)
      forward(da, dc, b, M, K, N, false, !trans_b, stream);  // (M, K)
    else
      forward(da, b, dc, K, M, N, trans_b, true, stream);  // (K, M) = op(B) · dCᵀ
  }
  if (db != nullptr) {
    if (!trans_b)
      forward(db, a, dc, K, N, M, !trans_a, false, stream);  // (K, N)
    else
      forward(db, dc, a, N, K, M, true, trans_a, stream);  // (N, K) = dCᵀ · op(A)
  }
}

}  // namespace

void matmul_forward(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K,
                    bool trans_a, bool trans_b, cudaStream_t stream) {
  forward(c, a, b, M, N, K, trans_a, trans_b, stream);
}
void matmul_forward(bf16* c, const bf16* a, const bf16* b, int64_t M, int64_t N, int64_t K,
                    bool trans_a, bool trans_b, cudaStream_t stream) {
  forward(c, a, b, M, N, K, trans_a, trans_b, stream);
}
void matmul_forward(float* c, const bf16* a, const bf16* b, int64_t M, int64_t N, int64_t K,
                    bool trans_a, bool trans_b, cudaStream_t stream) {
  forward(c, a, b, M, N, K, trans_a, trans_b, stream);
}

void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b,
                     int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
                     cudaStream_t stream) {
  backward(da, db, dc, a, b, M, N, K, trans_a, trans_b, stream);
}
void matmul_backward(bf16* da, bf16* db, const bf16* dc, const bf16* a, const bf16* b, int64_t M,
                     int64_t N, int64_t K, bool trans_a, bool trans_b, cudaStream_t stream) {
  backward(da, db, dc, a, b, M, N, K, trans_a, trans_b, stream);
}
void matmul_backward(float* da, float* db, const bf16* dc, const bf16* a, const bf16* b,
                     int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
                     cudaStream_t stream) {
  backward(da, db, dc, a, b, M, N, K, trans_a, trans_b, stream);
}

}  // namespace remoe::cuda
