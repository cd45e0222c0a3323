// The Hopper grouped GEMM's arithmetic that needs no GPU (kernels/cuda/grouped_matmul_sm90.cu):
// tile geometry, shared-memory matrix descriptors, the persistent tile schedule over
// variable-sized groups, and where each accumulator lives. Plain C++ that nvcc also compiles
// for the device, so the cpu suite (tests/kernels/gemm_tiles_test.cpp) checks every number the
// kernel uses against the PTX ISA's definitions without a GPU.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define REMOE_HD __host__ __device__
#else
#define REMOE_HD
#endif

namespace remoe::gemm {

// --- Tile geometry --------------------------------------------------------------------------
// One CTA computes a kBM × kBN output tile with two consumer warpgroups (64 rows each, one
// wgmma.m64n128k16 per 16 of the reduction) fed by one producer warp through kStages
// shared-memory stages of kBK reduction steps. Every operand tile is made of TMA boxes whose
// inner extent is 64 bf16 = 128 bytes: one 128-byte swizzle atom wide.
inline constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 4;
inline constexpr int kConsumerWarpgroups = kBM / 64;
inline constexpr int kThreads = 128 * (kConsumerWarpgroups + 1);  // + the producer warpgroup
inline constexpr int kAtomElems = 64;                              // bf16 per 128-byte line
inline constexpr int kLineBytes = 128;
inline constexpr int kBoxBytes = kAtomElems * kBK * 2;             // a 64 × 64 box: 8 KiB
inline constexpr int kTileABytes = kBM * kBK * 2, kTileBBytes = kBN * kBK * 2;
inline constexpr int kStageBytes = kTileABytes + kTileBBytes;
// Groups whose offsets the schedule stages in shared memory (the v1 kernels' limit too).
inline constexpr int kMaxGroups = 1024;
// Dynamic shared memory: the stages (1024-byte aligned, the 128-byte swizzle's period), the
// full and empty mbarriers, the offsets and the per-group tile prefix.
inline constexpr int kBarrierBytes = 2 * kStages * 8;
inline constexpr int kScheduleBytes = 2 * (kMaxGroups + 1) * 4;
inline constexpr int kSmemBytes = 1024 + kStages * kStageBytes + kBarrierBytes + kScheduleBytes;
static_assert(kBK == kAtomElems, "a stage holds one 128-byte swizzle atom of the reduction");
static_assert(kBN % kAtomElems == 0 && kBM % 64 == 0, "tiles are whole 64-wide boxes");
static_assert(kSmemBytes <= 227 * 1024,
              "stages + barriers + schedule exceed the 227 KiB of shared memory a Hopper CTA can have");

// --- wgmma shared-memory matrix descriptors (PTX ISA, "Matrix Descriptor Format") ------------
// bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte offset >> 4,
// 49-51 base offset (0: every tile starts on the swizzle's 1024-byte period), 62-63 swizzle
// (1 = 128-byte).
inline constexpr uint64_t kSwizzle128B = 1;

REMOE_HD constexpr uint64_t smem_descriptor(uint32_t smem_addr, uint32_t leading_bytes,
                                            uint32_t stride_bytes) {
  return uint64_t((smem_addr & 0x3FFFF) >> 4) | (uint64_t((leading_bytes & 0x3FFFF) >> 4) << 16) |
         (uint64_t((stride_bytes & 0x3FFFF) >> 4) << 32) | (kSwizzle128B << 62);
}

// The two shared-memory layouts the kernel stages, each in 128-byte lines of 64 bf16:
//   K-major  (the reduction is contiguous in memory): one box of {64 reduction, rows} — line r
//            is row r. 8-row core-matrix groups are kStrideBytes apart; the leading offset is
//            unused with a swizzle ("assumed 1", i.e. 16 bytes). Step kk (16 of the reduction)
//            starts 32·kk bytes into the line.
//   MN-major (rows are contiguous: dy and x read along the reduction of the weight gradient,
//            W read along N_out for dx): boxes of {64 rows, 64 reduction}, kBoxBytes apart —
//            line k is reduction step k. 64-row chunks are kBoxBytes apart (leading offset),
//            8-step groups kStrideBytes (stride offset); step kk starts 16 lines further.
inline constexpr uint32_t kStrideBytes = 8 * kLineBytes;  // 1024
enum class Major { k, mn };

REMOE_HD constexpr uint32_t leading_bytes(Major m) { return m == Major::k ? 16u : uint32_t(kBoxBytes); }
REMOE_HD constexpr uint32_t k_step_bytes(Major m) { return m == Major::k ? 32u : 16u * kLineBytes; }
// Byte offset, inside an operand tile, of the 64-row slice `slice` (a warpgroup's A, or B's
// start) for reduction step kk.
REMOE_HD constexpr uint32_t operand_offset(Major m, int slice, int kk) {
  return uint32_t(slice) * (m == Major::k ? 64u * kLineBytes : uint32_t(kBoxBytes)) +
         uint32_t(kk) * k_step_bytes(m);
}

// The 128-byte swizzle of TMA (CU_TENSOR_MAP_SWIZZLE_128B) and wgmma (Swizzle<3,4,3> on byte
// addresses): the 16-byte chunk index (bits 4-6) is XORed with the line index mod 8 (bits 7-9),
// relative to a 1024-byte aligned base.
REMOE_HD constexpr uint32_t swizzle128(uint32_t byte_offset) {
  return byte_offset ^ (((byte_offset >> 7) & 7u) << 4);
}

// --- Accumulators (wgmma .m64nNk16, f32 D fragment) -----------------------------------------
// Thread t of the warpgroup holds N/2 floats; register i is row 16·(t/32) + (t%32)/4 + 8·((i/2)%2),
// column 8·(i/4) + 2·(t%4) + i%2 of the 64 × N tile.
REMOE_HD constexpr int acc_row(int thread, int reg) {
  return 16 * (thread / 32) + (thread % 32) / 4 + 8 * ((reg / 2) % 2);
}
REMOE_HD constexpr int acc_col(int thread, int reg) {
  return 8 * (reg / 4) + 2 * (thread % 4) + reg % 2;
}

// --- The persistent schedule ----------------------------------------------------------------
// M-grouped (forward, dx): group g holds ceil(c_g / kBM) row tiles that never straddle groups,
// times n_col_tiles column tiles; tile t is row tile t / n_col_tiles, column t % n_col_tiles,
// so the CTAs working at once share their A rows. `prefix` (E + 1 entries) counts the row
// tiles before each group: prefix[g] = Σ_{g' < g} ceil(c_g' / kBM), prefix[E] = all of them.
REMOE_HD constexpr int32_t row_tiles(int32_t count) { return (count + kBM - 1) / kBM; }

struct RowTile {
  int32_t group;  // the group the tile belongs to
  int32_t row0;   // its first row (x's row index)
  int32_t rows;   // rows of the group inside it, in [1, kBM]
};

// Row tile `index` (< prefix[n_groups]): the last group whose prefix is ≤ index — empty groups
// share their successor's prefix, so the search lands on the group that owns the tile.
REMOE_HD inline RowTile locate_row_tile(const int32_t* offsets, const int32_t* prefix,
                                        int32_t n_groups, int32_t index) {
  int32_t lo = 0, hi = n_groups - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) / 2;
    if (prefix[mid] <= index) lo = mid;
    else hi = mid - 1;
  }
  const int32_t row0 = offsets[lo] + (index - prefix[lo]) * kBM;
  const int32_t end = offsets[lo + 1];
  return {lo, row0, end - row0 < kBM ? end - row0 : kBM};
}

// K-grouped (dw): E × m_tiles × n_tiles tiles of the (E, N_out, K) output, every group's
// (empty ones get zeros); tile t is group t / (m_tiles·n_tiles), then row-major.
struct WeightTile {
  int32_t group, m0, n0;
};
REMOE_HD constexpr WeightTile locate_weight_tile(int32_t m_tiles, int32_t n_tiles, int32_t index) {
  const int32_t per_group = m_tiles * n_tiles, rest = index % per_group;
  return {index / per_group, (rest / n_tiles) * kBM, (rest % n_tiles) * kBN};
}

}  // namespace remoe::gemm
