// Grouped GEMM on the GPU, v1: clear tiles, one launch for all groups (contracts in
// kernels/grouped_matmul.h).
//   x: (N, K); w: (E, N_out, K); y, dy: (N, N_out); dx: (N, K); dw: (E, N_out, K);
//   offsets: (E + 1) i32 on the device. bf16 or f32 storage; fp32 accumulation.
//
// Every block computes one kBM × kBN output tile as C = A · B over a reduction of length L:
//   forward  y[g]  = x[g]  · W[e]ᵀ   A = x rows (kBM × K),      B = W[e]ᵀ (K × kBN),      L = K
//   dx       dx[g] = dy[g] · W[e]    A = dy rows (kBM × N_out), B = W[e] (N_out × kBN),   L = N_out
//   dw       dw[e] = dy[g]ᵀ · x[g]   A = dy[g]ᵀ (kBM × c_e),    B = x[g] (c_e × kBN),     L = c_e
// Tiles of A and B are staged in shared memory (zero-padded past every edge, so any N, K,
// N_out and group size work), multiplied by a Policy — WMMA 16×16×16 bf16 fragments, or fp32
// FMA — and the fp32 result goes through shared memory to a bounds-checked store.
//
// The M-grouped kernels (forward, dx) schedule row tiles that never straddle two groups: block
// b reads the offsets into shared memory and walks the groups, each holding ceil(c_e / kBM)
// tiles, to find its (group, tile). The grid has ceil(max_rows / kBM) + E row slots, an upper
// bound on Σ_e ceil(c_e / kBM); blocks past the last tile exit. dw has one grid slice per group
// and reduces over all the group's rows in one block: no split-K, no atomics, deterministic.
// NOTE: v1 has no pipelining (cp.async / TMA), no wgmma and no swizzle; it is the baseline
// that the Hopper version (grouped_matmul_sm90.cu, v2) is measured against, and the path for
// f32, for shapes TMA cannot describe and for GPUs other than Hopper. The public launchers at
// the end dispatch between the two.
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdlib>
#include <string>

#include "kernels/check.h"
#include "kernels/cuda/grouped_matmul_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/nvtx.h"
#include "kernels/grouped_matmul.h"

namespace remoe::cuda {
using namespace detail;
namespace {

namespace wmma = nvcuda::wmma;

template <typename In> struct Policy;

// Tensor cores: 4 warps in 2 × 2, each owning 32 × 32 of the tile as 2 × 2 fragments.
template <>
struct Policy<__nv_bfloat16> {
  using In = __nv_bfloat16;
  static constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 128;
  // NOTE: WMMA needs ldm a multiple of 16 bytes and fragment pointers 32-byte aligned; +8
  // bf16 (+4 f32) keeps both and moves consecutive rows off the same banks.
  static constexpr int kLdA = kBK + 8, kLdB = kBN + 8, kLdC = kBN + 4;
  struct Acc {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> f[2][2];
  };

  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc.f[i][j], 0.0f);
  }

  __device__ static void mma(Acc& acc, const In* as, const In* bs) {
    const int warp = int(threadIdx.x) / 32, wm = warp / 2, wn = warp % 2;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], as + (wm * 32 + i * 16) * kLdA + kk, kLdA);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], bs + kk * kLdB + wn * 32 + j * 16, kLdB);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc.f[i][j], a[i], b[j], acc.f[i][j]);
    }
  }

  __device__ static void store(const Acc& acc, float* cs) {
    const int warp = int(threadIdx.x) / 32, wm = warp / 2, wn = warp % 2;
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(cs + (wm * 32 + i * 16) * kLdC + wn * 32 + j * 16, acc.f[i][j],
                                kLdC, wmma::mem_row_major);
  }
};

// fp32 FMA: 16 × 16 threads, each owning a 4 × 4 strided micro-tile (rows ty + 16i, columns
// tx + 16j) so a warp reads consecutive B columns.
template <>
struct Policy<float> {
  using In = float;
  static constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;
  static constexpr int kLdA = kBK + 4, kLdB = kBN + 4, kLdC = kBN + 4;
  struct Acc {
    float c[4][4];
  };

  __device__ static void zero(Acc& acc) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc.c[i][j] = 0.0f;
  }

  __device__ static void mma(Acc& acc, const In* as, const In* bs) {
    const int tx = int(threadIdx.x) % 16, ty = int(threadIdx.x) / 16;
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = as[(ty + 16 * i) * kLdA + kk];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = bs[kk * kLdB + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc.c[i][j] = fmaf(a[i], b[j], acc.c[i][j]);
    }
  }

  __device__ static void store(const Acc& acc, float* cs) {
    const int tx = int(threadIdx.x) % 16, ty = int(threadIdx.x) / 16;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) cs[(ty + 16 * i) * kLdC + tx + 16 * j] = acc.c[i][j];
  }
};

// The shared memory of one block; offsets only for the M-grouped kernels.
template <typename P>
struct Smem {
  alignas(128) typename P::In a[P::kBM * P::kLdA];
  alignas(128) typename P::In b[P::kBK * P::kLdB];
  alignas(128) float c[P::kBM * P::kLdC];
};
static_assert(sizeof(Smem<Policy<__nv_bfloat16>>) + 4 * (kGroupedMatmulMaxGroups + 1) <= 48 * 1024,
              "bf16 tiles and offsets exceed the 48 KiB of static shared memory");
static_assert(sizeof(Smem<Policy<float>>) + 4 * (kGroupedMatmulMaxGroups + 1) <= 48 * 1024,
              "f32 tiles and offsets exceed the 48 KiB of static shared memory");

// s[r][c] = g[r·stride_r + c·stride_c] inside (rows_valid, cols_valid), 0 outside. kColFast:
// consecutive threads take consecutive c (the operand is contiguous along c), else along r.
template <typename P, int kRows, int kCols, int kLd, bool kColFast>
__device__ void load_tile(typename P::In* s, const typename P::In* g, int64_t stride_r,
                          int64_t stride_c, int rows_valid, int cols_valid) {
  using In = typename P::In;
  for (int i = int(threadIdx.x); i < kRows * kCols; i += P::kThreads) {
    const int r = kColFast ? i / kCols : i % kRows;
    const int c = kColFast ? i % kCols : i / kRows;
    In v = In(0.0f);
    if (r < rows_valid && c < cols_valid) v = g[r * stride_r + c * stride_c];
    s[r * kLd + c] = v;
  }
}

// acc = A (m_valid × L) · B (L × n_valid), both zero-padded to the tile. Block-uniform.
template <typename P, bool kAColFast, bool kBColFast>
__device__ void mainloop(typename P::Acc& acc, Smem<P>& sm, const typename P::In* a,
                         int64_t a_sr, int64_t a_sc, int m_valid, const typename P::In* b,
                         int64_t b_sr, int64_t b_sc, int n_valid, int64_t reduce_len) {
  P::zero(acc);
  for (int64_t k0 = 0; k0 < reduce_len; k0 += P::kBK) {
    const int k_valid = int(min(int64_t(P::kBK), reduce_len - k0));
    load_tile<P, P::kBM, P::kBK, P::kLdA, kAColFast>(sm.a, a + k0 * a_sc, a_sr, a_sc, m_valid,
                                                      k_valid);
    load_tile<P, P::kBK, P::kBN, P::kLdB, kBColFast>(sm.b, b + k0 * b_sr, b_sr, b_sc, k_valid,
                                                      n_valid);
    __syncthreads();
    P::mma(acc, sm.a, sm.b);
    __syncthreads();  // the next loads overwrite the tiles
  }
}

template <typename P>
__device__ void store_tile(const typename P::Acc& acc, Smem<P>& sm, typename P::In* out,
                           int64_t ld_out, int m_valid, int n_valid) {
  P::store(acc, sm.c);
  __syncthreads();
  for (int i = int(threadIdx.x); i < P::kBM * P::kBN; i += P::kThreads) {
    const int r = i / P::kBN, c = i % P::kBN;
    if (r < m_valid && c < n_valid)
      out[r * ld_out + c] = store_as<typename P::In>(sm.c[r * P::kLdC + c]);
  }
}

struct RowTile {
  int group;     // −1: this block has no tile
  int64_t row0;  // first row of the tile
  int rows;      // rows of the tile inside the group, in [1, kBM]
};

// Block b's row tile: the groups hold ceil(c_e / kBM) tiles each, in group order.
template <typename P>
__device__ RowTile find_row_tile(int32_t* s_offsets, const int32_t* offsets, int n_groups,
                                 int64_t max_rows) {
  __shared__ RowTile s_tile;
  for (int g = int(threadIdx.x); g <= n_groups; g += blockDim.x) s_offsets[g] = offsets[g];
  __syncthreads();
  if (threadIdx.x == 0) {
    // NOTE: offsets that break the contract would make blocks read past x: trap instead.
    if (s_offsets[0] != 0 || s_offsets[n_groups] > max_rows) __trap();
    RowTile tile{-1, 0, 0};
    int64_t remaining = blockIdx.x;
    for (int g = 0; g < n_groups; ++g) {
      const int64_t count = int64_t(s_offsets[g + 1]) - s_offsets[g];
      if (count < 0) __trap();
      const int64_t tiles = (count + P::kBM - 1) / P::kBM;
      if (remaining < tiles) {
        tile.group = g;
        tile.row0 = s_offsets[g] + remaining * P::kBM;
        tile.rows = int(min(int64_t(P::kBM), s_offsets[g + 1] - tile.row0));
        break;
      }
      remaining -= tiles;
    }
    s_tile = tile;
  }
  __syncthreads();
  return s_tile;
}

template <typename P>
__global__ void __launch_bounds__(P::kThreads)
    grouped_forward_kernel(typename P::In* y, const typename P::In* x, const typename P::In* w,
                           const int32_t* offsets, int n_groups, int64_t k_in, int64_t n_out,
                           int64_t max_rows) {
  __shared__ Smem<P> sm;
  __shared__ int32_t s_offsets[kGroupedMatmulMaxGroups + 1];
  const RowTile tile = find_row_tile<P>(s_offsets, offsets, n_groups, max_rows);
  if (tile.group < 0) return;  // block-uniform
  const int64_t n0 = int64_t(blockIdx.y) * P::kBN;
  const int n_valid = int(min(int64_t(P::kBN), n_out - n0));
  typename P::Acc acc;
  // A(m, p) = x[row0 + m, p]; B(p, n) = W[e][n0 + n, p].
  mainloop<P, true, false>(acc, sm, x + tile.row0 * k_in, k_in, 1, tile.rows,
                           w + (int64_t(tile.group) * n_out + n0) * k_in, 1, k_in, n_valid, k_in);
  store_tile<P>(acc, sm, y + tile.row0 * n_out + n0, n_out, tile.rows, n_valid);
}

template <typename P>
__global__ void __launch_bounds__(P::kThreads)
    grouped_dx_kernel(typename P::In* dx, const typename P::In* dy, const typename P::In* w,
                      const int32_t* offsets, int n_groups, int64_t k_in, int64_t n_out,
                      int64_t max_rows) {
  __shared__ Smem<P> sm;
  __shared__ int32_t s_offsets[kGroupedMatmulMaxGroups + 1];
  const RowTile tile = find_row_tile<P>(s_offsets, offsets, n_groups, max_rows);
  if (tile.group < 0) return;
  const int64_t n0 = int64_t(blockIdx.y) * P::kBN;  // over K
  const int n_valid = int(min(int64_t(P::kBN), k_in - n0));
  typename P::Acc acc;
  // A(m, j) = dy[row0 + m, j]; B(j, n) = W[e][j, n0 + n].
  mainloop<P, true, true>(acc, sm, dy + tile.row0 * n_out, n_out, 1, tile.rows,
                          w + int64_t(tile.group) * n_out * k_in + n0, k_in, 1, n_valid, n_out);
  store_tile<P>(acc, sm, dx + tile.row0 * k_in + n0, k_in, tile.rows, n_valid);
}

// grid (K tiles, N_out tiles, E).
template <typename P>
__global__ void __launch_bounds__(P::kThreads)
    grouped_dw_kernel(typename P::In* dw, const typename P::In* dy, const typename P::In* x,
                      const int32_t* offsets, int64_t k_in, int64_t n_out, int64_t max_rows) {
  __shared__ Smem<P> sm;
  const int64_t e = blockIdx.z;
  const int64_t g0 = offsets[e], g1 = offsets[e + 1];
  if (g1 < g0 || g0 < 0 || g1 > max_rows) __trap();
  const int64_t m0 = int64_t(blockIdx.y) * P::kBM;  // over N_out
  const int64_t n0 = int64_t(blockIdx.x) * P::kBN;  // over K
  const int m_valid = int(min(int64_t(P::kBM), n_out - m0));
  const int n_valid = int(min(int64_t(P::kBN), k_in - n0));
  typename P::Acc acc;
  // A(m, r) = dy[g0 + r, m0 + m] (contiguous along m); B(r, n) = x[g0 + r, n0 + n].
  mainloop<P, false, true>(acc, sm, dy + g0 * n_out + m0, 1, n_out, m_valid,
                           x + g0 * k_in + n0, k_in, 1, n_valid, g1 - g0);
  store_tile<P>(acc, sm, dw + (e * n_out + m0) * k_in + n0, k_in, m_valid, n_valid);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_sizes(const char* op, int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows) {
  REMOE_CHECK(n_groups >= 0 && k_in >= 0 && n_out >= 0 && max_rows >= 0, op,
              ": negative size (E ", n_groups, ", K ", k_in, ", N_out ", n_out, ", max_rows ",
              max_rows, ")");
  REMOE_CHECK(n_groups <= kGroupedMatmulMaxGroups, op, ": E = ", n_groups, " above ",
              kGroupedMatmulMaxGroups, " (the offsets are staged in shared memory)");
  REMOE_CHECK(max_rows < (int64_t(1) << 31), op, ": max_rows = ", max_rows,
              " does not fit the i32 offsets");
}

// Row slots of the M-grouped grid: Σ_e ceil(c_e / kBM) ≤ floor(N / kBM) + E.
template <typename P>
unsigned row_slots(int64_t max_rows, int64_t n_groups) {
  return unsigned(max_rows / P::kBM + n_groups);
}

// v1's launchers; the public ones below have checked the sizes and returned on empty outputs.
template <typename T>
void forward(T* y, const T* x, const T* w, const int32_t* offsets, int64_t n_groups,
             int64_t k_in, int64_t n_out, int64_t max_rows, cudaStream_t stream) {
  using D = device_t<T>;
  using P = Policy<D>;
  const dim3 grid(row_slots<P>(max_rows, n_groups), unsigned(ceil_div(n_out, P::kBN)));
  REMOE_CHECK(grid.y <= 65535, "grouped_matmul_forward: N_out = ", n_out, " too large");
  grouped_forward_kernel<P><<<grid, P::kThreads, 0, stream>>>(
      dev(y), dev(x), dev(w), offsets, int(n_groups), k_in, n_out, max_rows);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void backward(T* dx, T* dw, const T* dy, const T* x, const T* w, const int32_t* offsets,
              int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
              cudaStream_t stream) {
  using D = device_t<T>;
  using P = Policy<D>;
  if (dx && n_groups > 0 && max_rows > 0 && k_in > 0) {
    const dim3 grid(row_slots<P>(max_rows, n_groups), unsigned(ceil_div(k_in, P::kBN)));
    REMOE_CHECK(grid.y <= 65535, "grouped_matmul_backward: K = ", k_in, " too large");
    grouped_dx_kernel<P><<<grid, P::kThreads, 0, stream>>>(
        dev(dx), dev(dy), dev(w), offsets, int(n_groups), k_in, n_out, max_rows);
    CUDA_CHECK(cudaGetLastError());
  }
  if (dw && n_groups > 0 && k_in > 0 && n_out > 0) {
    const dim3 grid(unsigned(ceil_div(k_in, P::kBN)), unsigned(ceil_div(n_out, P::kBM)),
                    unsigned(n_groups));
    REMOE_CHECK(grid.y <= 65535, "grouped_matmul_backward: N_out = ", n_out, " too large");
    grouped_dw_kernel<P><<<grid, P::kThreads, 0, stream>>>(dev(dw), dev(dy), dev(x),
                                                           offsets, k_in, n_out, max_rows);
    CUDA_CHECK(cudaGetLastError());
  }
}

// Whether this call runs the Hopper kernels: "" if so, else why not (an error when asked for).
template <typename T>
std::string hopper_unsupported(int64_t k_in, int64_t n_out, std::initializer_list<const void*> buffers) {
  if (!std::is_same_v<T, bf16>) return "the hopper grouped GEMM is bf16 only";
  if (std::string why = sm90_unavailable(); !why.empty()) return why;
  if (k_in % 8 != 0 || n_out % 8 != 0)
    return str_cat("K = ", k_in, " and N_out = ", n_out,
                   " must be multiples of 8 (TMA strides are multiples of 16 bytes)");
  for (const void* p : buffers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
      return "a buffer is not 16-byte aligned (TMA needs 16-byte aligned addresses)";
  return "";
}

// True: run v2. Asking for hopper where it does not apply is an error naming the reason.
template <typename T>
bool use_hopper(const char* op, GroupedMatmulImpl impl, int64_t k_in, int64_t n_out,
                std::initializer_list<const void*> buffers) {
  if (impl == GroupedMatmulImpl::automatic) impl = grouped_matmul_impl_from_env();
  if (impl == GroupedMatmulImpl::tiled) return false;
  const std::string why = hopper_unsupported<T>(k_in, n_out, buffers);
  REMOE_CHECK(why.empty() || impl == GroupedMatmulImpl::automatic, op,
              ": impl = hopper, but ", why);
  return why.empty();
}

}  // namespace

// REMOE_GROUPED_GEMM=auto|tiled|hopper overrides `automatic` for a whole run (to compare the
// two inside the trainer, or to keep training on v1 while v2 is under suspicion); unset or
// empty is auto.
GroupedMatmulImpl grouped_matmul_impl_from_env() {
  static const GroupedMatmulImpl impl = [] {
    const char* v = std::getenv("REMOE_GROUPED_GEMM");
    const std::string value = v ? v : "";
    if (value.empty() || value == "auto") return GroupedMatmulImpl::automatic;
    if (value == "tiled") return GroupedMatmulImpl::tiled;
    if (value == "hopper") return GroupedMatmulImpl::hopper;
    REMOE_FAIL("environment variable REMOE_GROUPED_GEMM = \"", value,
               "\": expected auto, tiled or hopper");
  }();
  return impl;
}

template <typename T>
std::string grouped_matmul_hopper_unsupported(int64_t k_in, int64_t n_out,
                                              std::initializer_list<const void*> buffers) {
  return hopper_unsupported<T>(k_in, n_out, buffers);
}

template <typename T>
void grouped_matmul_forward(T* y, const T* x, const T* w, const int32_t* offsets,
                            int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                            cudaStream_t stream, GroupedMatmulImpl impl) {
  NvtxRange range("grouped_matmul_forward");
  check_sizes("grouped_matmul_forward", n_groups, k_in, n_out, max_rows);
  if (n_groups == 0 || max_rows == 0 || n_out == 0) return;  // no output element
  // (use_hopper is false, or an error when hopper was asked for, for anything but bf16.)
  const bool hopper = k_in > 0 && use_hopper<T>("grouped_matmul_forward", impl, k_in, n_out, {y, x, w});
  if constexpr (std::is_same_v<T, bf16>)
    if (hopper) return sm90_grouped_forward(y, x, w, offsets, n_groups, k_in, n_out, max_rows, stream);
  forward(y, x, w, offsets, n_groups, k_in, n_out, max_rows, stream);
}

template <typename T>
void grouped_matmul_backward(T* dx, T* dw, const T* dy, const T* x, const T* w,
                             const int32_t* offsets, int64_t n_groups, int64_t k_in,
                             int64_t n_out, int64_t max_rows, cudaStream_t stream,
                             GroupedMatmulImpl impl) {
  NvtxRange range("grouped_matmul_backward");
  check_sizes("grouped_matmul_backward", n_groups, k_in, n_out, max_rows);
  if (n_groups == 0 || k_in == 0) return;  // dx and dw are empty
  // An empty reduction (N_out = 0 for dx, no rows for dw) is v1's: it writes the zeros.
  const bool hopper = n_out > 0 && max_rows > 0 &&
                      use_hopper<T>("grouped_matmul_backward", impl, k_in, n_out, {dx, dw, dy, x, w});
  if constexpr (std::is_same_v<T, bf16>) {
    if (hopper) {
      if (dx) sm90_grouped_dx(dx, dy, w, offsets, n_groups, k_in, n_out, max_rows, stream);
      if (dw) sm90_grouped_dw(dw, dy, x, offsets, n_groups, k_in, n_out, max_rows, stream);
      return;
    }
  }
  backward(dx, dw, dy, x, w, offsets, n_groups, k_in, n_out, max_rows, stream);
}

#define REMOE_INSTANTIATE(T)                                                                     \
  template std::string grouped_matmul_hopper_unsupported<T>(int64_t, int64_t,                     \
                                                            std::initializer_list<const void*>);  \
  template void grouped_matmul_forward<T>(T*, const T*, const T*, const int32_t*, int64_t,        \
                                          int64_t, int64_t, int64_t, cudaStream_t,                \
                                          GroupedMatmulImpl);                                      \
  template void grouped_matmul_backward<T>(T*, T*, const T*, const T*, const T*, const int32_t*,  \
                                           int64_t, int64_t, int64_t, int64_t, cudaStream_t,      \
                                           GroupedMatmulImpl);
REMOE_INSTANTIATE(float)
REMOE_INSTANTIATE(bf16)
#undef REMOE_INSTANTIATE

}  // namespace remoe::cuda
