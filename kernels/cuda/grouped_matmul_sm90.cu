// Grouped GEMM on Hopper, v2 (contracts in kernels/grouped_matmul.h; the ladder from v1 in
// kernels/README.md). bf16 in, fp32 accumulation in registers, one bf16 rounding per output.
//
// One kernel template serves the three products of the experts' linear layers; each CTA owns
// a kBM × kBN output tile at a time and reduces over L in kBK steps (kernels/gemm_tiles.h):
//   forward  y[g]  = x[g]  · W[e]ᵀ   A = x rows   (K-major),  B = W[e] rows  (K-major),  L = K
//   dx       dx[g] = dy[g] · W[e]    A = dy rows  (K-major),  B = W[e]       (N-major),  L = N_out
//   dw       dw[e] = dy[g]ᵀ · x[g]   A = dy[g]ᵀ   (M-major),  B = x[g]       (N-major),  L = c_e
//
// Roles (warp specialisation): warpgroups 0 and 1 consume, 64 output rows each, with
// wgmma.m64n128k16 straight from shared memory; warpgroup 2 produces — one thread issues the
// TMA loads of every stage. kStages stages ring between them on two mbarriers each: `full`
// (the producer's expect_tx plus the TMA's bytes) and `empty` (one arrival per consumer warp
// once its wgmma have read the stage). A consumer keeps one wgmma group in flight: it waits for
// the previous stage's group, not the current one, before releasing that stage.
//
// Persistence: the grid is at most one CTA per SM; CTA b takes tiles b, b + grid, ... of the
// schedule in gemm_tiles.h. Every CTA stages the offsets and the per-group tile prefix in
// shared memory, so the schedule is read on the device — the host never learns N — and an
// empty group has no tile (forward, dx) or a tile of zeros with no loads (dw).
//
// Edges: the tensor maps give TMA the true extents, so reads past K, N_out, E or max_rows land
// as zeros. A row tile that runs past its group computes rows that the epilogue drops. The
// weight gradient alone reduces over rows, so there the rows of a stage past the group's end
// (another group's or unwritten capacity) are zeroed in shared memory — whole 128-byte lines,
// which the swizzle leaves whole — before the wgmma read them.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <mutex>

#include "kernels/check.h"
#include "kernels/cuda/grouped_matmul_sm90.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx_sm90.cuh"
#include "kernels/gemm_tiles.h"

namespace remoe::cuda::detail {
namespace {

using namespace remoe::gemm;

enum class Kind { forward, dx, dw };

static_assert(kBM / kAtomElems == kConsumerWarpgroups && kBN / kAtomElems == kConsumerWarpgroups,
              "the weight gradient's tail zeroing gives each consumer warpgroup one A box and one B box");

template <Kind kKind> constexpr Major kMajorA = kKind == Kind::dw ? Major::mn : Major::k;
template <Kind kKind> constexpr Major kMajorB = kKind == Kind::forward ? Major::k : Major::mn;

// What one tile of the schedule is: where its output goes and what the producer loads.
struct Tile {
  int32_t group;      // expert
  int32_t row0;       // forward, dx: first row of x / dy;  dw: first row of the group (g0)
  int32_t m0;         // dw: the tile's first row of dw[e] (over N_out); forward, dx: unused
  int32_t n0;         // the tile's first output column
  int32_t rows_valid;  // output rows inside the tile
  int32_t cols_valid;  // output columns inside the tile
  int32_t k_iters;     // reduction steps of kBK
  int32_t reduce_len;  // dw: the group's rows (for the stage-tail zeroing)
};

struct Params {
  __nv_bfloat16* out;
  const int32_t* offsets;
  int32_t n_groups, k_in, n_out, max_rows;
};

__device__ __forceinline__ int32_t ceil_div32(int32_t a, int32_t b) { return (a + b - 1) / b; }

// Output columns of the M-grouped products: N_out for forward, K for dx.
template <Kind kKind>
__device__ __forceinline__ int32_t out_cols(const Params& p) {
  return kKind == Kind::forward ? p.n_out : p.k_in;
}

template <Kind kKind>
__device__ __forceinline__ int32_t total_tiles(const Params& p, const int32_t* prefix) {
  if constexpr (kKind == Kind::dw)
    return p.n_groups * ceil_div32(p.n_out, kBM) * ceil_div32(p.k_in, kBN);
  else
    return prefix[p.n_groups] * ceil_div32(out_cols<kKind>(p), kBN);
}

template <Kind kKind>
__device__ __forceinline__ Tile resolve(const Params& p, const int32_t* offsets,
                                        const int32_t* prefix, int32_t index) {
  Tile t{};
  if constexpr (kKind == Kind::dw) {
    const WeightTile w = locate_weight_tile(ceil_div32(p.n_out, kBM), ceil_div32(p.k_in, kBN), index);
    t.group = w.group;
    t.row0 = offsets[w.group];
    t.m0 = w.m0;
    t.n0 = w.n0;
    t.rows_valid = min(kBM, p.n_out - w.m0);
    t.cols_valid = min(kBN, p.k_in - w.n0);
    t.reduce_len = offsets[w.group + 1] - offsets[w.group];
  } else {
    const int32_t col_tiles = ceil_div32(out_cols<kKind>(p), kBN);
    const RowTile r = locate_row_tile(offsets, prefix, p.n_groups, index / col_tiles);
    t.group = r.group;
    t.row0 = r.row0;
    t.n0 = (index % col_tiles) * kBN;
    t.rows_valid = r.rows;
    t.cols_valid = min(kBN, out_cols<kKind>(p) - t.n0);
    t.reduce_len = kKind == Kind::forward ? p.k_in : p.n_out;
  }
  t.k_iters = ceil_div32(t.reduce_len, kBK);
  return t;
}

#ifdef REMOE_SM90A_DEVICE

// The producer's loads of reduction step k of tile t into one stage (kStageBytes in all).
template <Kind kKind>
__device__ __forceinline__ void load_stage(uint8_t* a, uint8_t* b, uint64_t* full,
                                           const CUtensorMap* map_a, const CUtensorMap* map_b,
                                           const Tile& t, int32_t k) {
  const int32_t k0 = k * kBK;
  if constexpr (kKind == Kind::forward) {
    ptx::tma_load_2d(a, map_a, full, k0, t.row0);          // x box {64 of K, 128 rows}
    ptx::tma_load_3d(b, map_b, full, k0, t.n0, t.group);   // W box {64 of K, 128 of N_out, 1}
  } else if constexpr (kKind == Kind::dx) {
    ptx::tma_load_2d(a, map_a, full, k0, t.row0);          // dy box {64 of N_out, 128 rows}
#pragma unroll
    for (int h = 0; h < kBN / kAtomElems; ++h)             // W boxes {64 of K, 64 of N_out, 1}
      ptx::tma_load_3d(b + h * kBoxBytes, map_b, full, t.n0 + h * kAtomElems, k0, t.group);
  } else {
#pragma unroll
    for (int h = 0; h < kBM / kAtomElems; ++h)             // dy boxes {64 of N_out, 64 rows}
      ptx::tma_load_2d(a + h * kBoxBytes, map_a, full, t.m0 + h * kAtomElems, t.row0 + k0);
#pragma unroll
    for (int h = 0; h < kBN / kAtomElems; ++h)             // x boxes {64 of K, 64 rows}
      ptx::tma_load_2d(b + h * kBoxBytes, map_b, full, t.n0 + h * kAtomElems, t.row0 + k0);
  }
}

// Zeroes lines [valid, kBK) of one 64-line box: the reduction rows past the group's end.
__device__ __forceinline__ void zero_tail_lines(uint8_t* box, int32_t valid, int thread) {
  const int chunks = (kBK - valid) * (kLineBytes / 16);
  uint4* base = reinterpret_cast<uint4*>(box + valid * kLineBytes);
  for (int i = thread; i < chunks; i += 128) base[i] = make_uint4(0, 0, 0, 0);
}

template <Kind kKind>
__device__ __forceinline__ void store_tile(const Params& p, const Tile& t, const float (&acc)[64],
                                           int warpgroup, int thread) {
  __nv_bfloat16* out;
  int64_t ld;
  if constexpr (kKind == Kind::dw) {
    ld = p.k_in;
    out = p.out + (int64_t(t.group) * p.n_out + t.m0) * ld + t.n0;
  } else {
    ld = out_cols<kKind>(p);
    out = p.out + int64_t(t.row0) * ld + t.n0;
  }
#pragma unroll
  for (int i = 0; i < 64; i += 2) {  // registers i, i + 1 are neighbouring columns
    const int r = 64 * warpgroup + acc_row(thread, i), c = acc_col(thread, i);
    if (r < t.rows_valid && c < t.cols_valid)  // cols_valid is even: c + 1 is inside too
      *reinterpret_cast<__nv_bfloat162*>(out + r * ld + c) = __floats2bfloat162_rn(acc[i], acc[i + 1]);
  }
}

#endif  // REMOE_SM90A_DEVICE

template <Kind kKind>
__global__ void __launch_bounds__(kThreads, 1)
    grouped_gemm_sm90(const __grid_constant__ CUtensorMap map_a,
                      const __grid_constant__ CUtensorMap map_b, const Params p) {
#ifdef REMOE_SM90A_DEVICE
  extern __shared__ uint8_t smem_raw[];
  // The 128-byte swizzle repeats every 1024 bytes and the descriptors assume tiles start on
  // that period (base offset 0): align the stages by hand (kSmemBytes has the slack).
  uint8_t* smem = smem_raw + ((1024 - ptx::smem_addr(smem_raw) % 1024) % 1024);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
  uint64_t* empty = full + kStages;
  int32_t* s_offsets = reinterpret_cast<int32_t*>(empty + kStages);
  int32_t* s_prefix = s_offsets + kMaxGroups + 1;

  const int tid = int(threadIdx.x), warpgroup = tid / 128, thread = tid % 128;
  // Null offsets: one group of max_rows rows (a dense GEMM, kernels/cuda/matmul.cu).
  for (int g = tid; g <= p.n_groups; g += kThreads)
    s_offsets[g] = p.offsets ? p.offsets[g] : (g == 0 ? 0 : p.max_rows);
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      ptx::mbarrier_init(&full[s], 1);
      ptx::mbarrier_init(&empty[s], kConsumerWarpgroups * 4);
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (tid == 0) {
    // NOTE: offsets that break the contract would send TMA and the stores astray: trap.
    if (s_offsets[0] != 0 || s_offsets[p.n_groups] > p.max_rows) __trap();
    int32_t tiles = 0;
    for (int g = 0; g < p.n_groups; ++g) {
      if (s_offsets[g + 1] < s_offsets[g]) __trap();
      s_prefix[g] = tiles;
      tiles += row_tiles(s_offsets[g + 1] - s_offsets[g]);
    }
    s_prefix[p.n_groups] = tiles;
  }
  __syncthreads();
  const int32_t n_tiles = total_tiles<kKind>(p, s_prefix);

  if (warpgroup == kConsumerWarpgroups) {  // the producer
    if (thread == 0) {
      ptx::prefetch_tensormap(&map_a);
      ptx::prefetch_tensormap(&map_b);
      uint32_t it = 0;
      for (int32_t index = blockIdx.x; index < n_tiles; index += gridDim.x) {
        const Tile t = resolve<kKind>(p, s_offsets, s_prefix, index);
        for (int32_t k = 0; k < t.k_iters; ++k, ++it) {
          const uint32_t stage = it % kStages, parity = (it / kStages) & 1;
          ptx::mbarrier_wait_parity(&empty[stage], parity ^ 1);
          ptx::mbarrier_arrive_expect_tx(&full[stage], kStageBytes);
          uint8_t* a = smem + stage * kStageBytes;
          load_stage<kKind>(a, a + kTileABytes, &full[stage], &map_a, &map_b, t, k);
        }
      }
    }
    return;
  }

  // The consumers.
  constexpr int kTransA = kMajorA<kKind> == Major::mn, kTransB = kMajorB<kKind> == Major::mn;
  const bool release_lane = thread % 32 == 0;
  float acc[64];
  uint32_t it = 0;
  for (int32_t index = blockIdx.x; index < n_tiles; index += gridDim.x) {
    const Tile t = resolve<kKind>(p, s_offsets, s_prefix, index);
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    uint32_t previous = 0;
    for (int32_t k = 0; k < t.k_iters; ++k, ++it) {
      const uint32_t stage = it % kStages, parity = (it / kStages) & 1;
      ptx::mbarrier_wait_parity(&full[stage], parity);
      uint8_t* a = smem + stage * kStageBytes;
      uint8_t* b = a + kTileABytes;
      if constexpr (kKind == Kind::dw) {
        const int32_t valid = t.reduce_len - k * kBK;
        if (valid < kBK) {  // the same for both consumer warpgroups
          zero_tail_lines(a + warpgroup * kBoxBytes, valid, thread);
          zero_tail_lines(b + warpgroup * kBoxBytes, valid, thread);
          ptx::fence_proxy_async_shared();
          ptx::named_barrier_sync(1, 128 * kConsumerWarpgroups);
        }
      }
#pragma unroll
      for (int i = 0; i < 64; ++i) ptx::fence_operand(acc[i]);
      ptx::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        const uint64_t da = smem_descriptor(
            ptx::smem_addr(a) + operand_offset(kMajorA<kKind>, warpgroup, kk),
            leading_bytes(kMajorA<kKind>), kStrideBytes);
        const uint64_t db = smem_descriptor(ptx::smem_addr(b) + operand_offset(kMajorB<kKind>, 0, kk),
                                            leading_bytes(kMajorB<kKind>), kStrideBytes);
        ptx::wgmma_m64n128k16_bf16<kTransA, kTransB>(acc, da, db, 1);
      }
      ptx::wgmma_commit_group();
#pragma unroll
      for (int i = 0; i < 64; ++i) ptx::fence_operand(acc[i]);
      ptx::wgmma_wait_group<1>();  // the previous step's wgmma are done: its stage is free
      if (k > 0 && release_lane) ptx::mbarrier_arrive(&empty[previous]);
      previous = stage;
    }
    ptx::wgmma_wait_group<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) ptx::fence_operand(acc[i]);
    if (t.k_iters > 0 && release_lane) ptx::mbarrier_arrive(&empty[previous]);
    store_tile<kKind>(p, t, acc, warpgroup, thread);
  }
#else
  (void)map_a;
  (void)map_b;
  (void)p;
  __trap();  // not an sm_90a build: the host never launches this (sm90_unavailable)
#endif
}

// --- Host side --------------------------------------------------------------------------------

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                cudaEnableDefault, &found));
    REMOE_CHECK(found == cudaDriverEntryPointSuccess && fn != nullptr,
                "grouped_matmul (hopper): the driver has no cuTensorMapEncodeTiled (needs a "
                "CUDA 12 driver or newer)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// A bf16 tensor map over a dense row-major tensor: dims innermost first, the box likewise,
// 128-byte swizzle, zeros out of bounds.
template <int kRank>
CUtensorMap make_map(const void* base, const uint64_t (&dims)[kRank], const uint32_t (&box)[kRank]) {
  cuuint64_t gdims[kRank], strides[kRank > 1 ? kRank - 1 : 1];
  cuuint32_t gbox[kRank], elem_strides[kRank];
  uint64_t stride = 2;
  for (int i = 0; i < kRank; ++i) {
    gdims[i] = dims[i];
    gbox[i] = box[i];
    elem_strides[i] = 1;
    stride *= dims[i];
    if (i + 1 < kRank) strides[i] = stride;
  }
  CUtensorMap map{};
  const CUresult r = tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, kRank, const_cast<void*>(base), gdims, strides, gbox,
      elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  REMOE_CHECK(r == CUDA_SUCCESS, "grouped_matmul (hopper): cuTensorMapEncodeTiled failed (CUresult ",
              int(r), ") for a rank-", kRank, " map with inner extent ", dims[0]);
  return map;
}

int sm_count() {
  int dev = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

template <Kind kKind>
void launch(const CUtensorMap& map_a, const CUtensorMap& map_b, const Params& p,
            int64_t tile_bound, cudaStream_t stream) {
  static std::once_flag once;
  std::call_once(once, [] {
    CUDA_CHECK(cudaFuncSetAttribute(grouped_gemm_sm90<kKind>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  });
  const int64_t grid = std::min<int64_t>(sm_count(), tile_bound);
  if (grid <= 0) return;
  grouped_gemm_sm90<kKind><<<unsigned(grid), kThreads, kSmemBytes, stream>>>(map_a, map_b, p);
  CUDA_CHECK(cudaGetLastError());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Params params(bf16* out, const int32_t* offsets, int64_t n_groups, int64_t k_in, int64_t n_out,
              int64_t max_rows) {
  return Params{dev(out), offsets, int32_t(n_groups), int32_t(k_in), int32_t(n_out),
                int32_t(max_rows)};
}

// Row slots of the M-grouped schedule, an upper bound on Σ_e ceil(c_e / kBM).
int64_t row_tile_bound(int64_t max_rows, int64_t n_groups) { return max_rows / kBM + n_groups; }

}  // namespace

std::string sm90_unavailable() {
#ifndef REMOE_SM90A
  return "this build has no sm_90a kernels (meson option cuda-arch is not 90a)";
#else
  int dev = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (major != 9 || minor != 0)
    return str_cat("the GPU is compute capability ", major, ".", minor, ", not 9.0 (Hopper)");
  return "";
#endif
}

void sm90_grouped_forward(bf16* y, const bf16* x, const bf16* w, const int32_t* offsets,
                          int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                          cudaStream_t stream) {
  const uint64_t K = uint64_t(k_in), NO = uint64_t(n_out), E = uint64_t(n_groups);
  const CUtensorMap a = make_map<2>(x, {K, uint64_t(max_rows)}, {kAtomElems, kBM});
  const CUtensorMap b = make_map<3>(w, {K, NO, E}, {kAtomElems, kBN, 1});
  launch<Kind::forward>(a, b, params(y, offsets, n_groups, k_in, n_out, max_rows),
                        row_tile_bound(max_rows, n_groups) * ceil_div(n_out, kBN), stream);
}

void sm90_grouped_dx(bf16* dx, const bf16* dy, const bf16* w, const int32_t* offsets,
                     int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                     cudaStream_t stream) {
  const uint64_t K = uint64_t(k_in), NO = uint64_t(n_out), E = uint64_t(n_groups);
  const CUtensorMap a = make_map<2>(dy, {NO, uint64_t(max_rows)}, {kAtomElems, kBM});
  const CUtensorMap b = make_map<3>(w, {K, NO, E}, {kAtomElems, kBK, 1});
  launch<Kind::dx>(a, b, params(dx, offsets, n_groups, k_in, n_out, max_rows),
                   row_tile_bound(max_rows, n_groups) * ceil_div(k_in, kBN), stream);
}

void sm90_grouped_dw(bf16* dw, const bf16* dy, const bf16* x, const int32_t* offsets,
                     int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                     cudaStream_t stream) {
  const uint64_t K = uint64_t(k_in), NO = uint64_t(n_out), R = uint64_t(max_rows);
  const CUtensorMap a = make_map<2>(dy, {NO, R}, {kAtomElems, kBK});
  const CUtensorMap b = make_map<2>(x, {K, R}, {kAtomElems, kBK});
  launch<Kind::dw>(a, b, params(dw, offsets, n_groups, k_in, n_out, max_rows),
                   n_groups * ceil_div(n_out, kBM) * ceil_div(k_in, kBN), stream);
}

}  // namespace remoe::cuda::detail
