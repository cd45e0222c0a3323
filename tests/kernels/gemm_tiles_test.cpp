// The Hopper grouped GEMM's GPU-free arithmetic (kernels/gemm_tiles.h), checked on the CPU:
// the persistent schedule covers every output exactly once, the accumulator map is the wgmma
// fragment, and — the part a wrong constant would silently break — for every operand the
// kernel stages, the element wgmma reads through the kernel's descriptor (the PTX ISA's
// canonical layout plus the 128-byte swizzle) is the element TMA wrote there.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "kernels/gemm_tiles.h"

namespace remoe::gemm {
namespace {

TEST(GemmTiles, DescriptorFields) {
  // PTX ISA, matrix descriptor: address, leading and stride offsets >> 4; 128-byte swizzle = 1.
  const uint64_t d = smem_descriptor(0x1400, 8192, 1024);
  EXPECT_EQ(d & 0x3FFF, 0x1400u >> 4);
  EXPECT_EQ((d >> 16) & 0x3FFF, 8192u >> 4);
  EXPECT_EQ((d >> 32) & 0x3FFF, 1024u >> 4);
  EXPECT_EQ((d >> 49) & 0x7, 0u);  // base offset: tiles start on the 1024-byte period
  EXPECT_EQ(d >> 62, 1u);
  EXPECT_EQ(smem_descriptor(0, 16, 1024), (uint64_t(1) << 16) | (uint64_t(64) << 32) | (uint64_t(1) << 62));
  // The address field keeps bits 4..17 only (shared memory is below 256 KiB).
  EXPECT_EQ(smem_descriptor(0x3FFF0, 16, 16) & 0x3FFF, 0x3FFFu);
}

TEST(GemmTiles, AccumulatorFragmentIsABijection) {
  std::set<std::pair<int, int>> seen;
  for (int t = 0; t < 128; ++t)
    for (int i = 0; i < 64; ++i) {
      const int r = acc_row(t, i), c = acc_col(t, i);
      ASSERT_TRUE(r >= 0 && r < 64 && c >= 0 && c < 128) << t << " " << i;
      ASSERT_TRUE(seen.insert({r, c}).second) << "(" << r << ", " << c << ") twice";
      if (i % 2 == 1) {
        EXPECT_EQ(c, acc_col(t, i - 1) + 1);  // the epilogue's bf16x2 pairs
      }
    }
  EXPECT_EQ(seen.size(), 64u * 128u);
  // PTX ISA figure for .m64nNk16 D: thread 0 holds (0,0) (0,1) (8,0) (8,1), thread 5 starts at (1,2).
  EXPECT_EQ(acc_row(0, 2), 8);
  EXPECT_EQ(acc_col(5, 0), 2);
  EXPECT_EQ(acc_row(5, 0), 1);
  EXPECT_EQ(acc_row(32, 0), 16);  // warp 1 of the warpgroup: rows 16..31
  EXPECT_EQ(acc_col(0, 4), 8);
}

std::vector<int32_t> prefix_of(const std::vector<int32_t>& offsets) {
  std::vector<int32_t> p(offsets.size(), 0);
  for (size_t g = 0; g + 1 < offsets.size(); ++g) p[g + 1] = p[g] + row_tiles(offsets[g + 1] - offsets[g]);
  return p;
}

TEST(GemmTiles, RowTilesCoverEveryRowOnceAndStayInTheirGroup) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int E = 1 + int(rng() % 40);
    std::vector<int32_t> offsets(size_t(E) + 1, 0);
    for (int g = 0; g < E; ++g) {
      const int32_t c = rng() % 3 == 0 ? 0 : int32_t(rng() % 400);  // a third of them empty
      offsets[size_t(g) + 1] = offsets[size_t(g)] + c;
    }
    const std::vector<int32_t> prefix = prefix_of(offsets);
    std::vector<int> covered(size_t(offsets.back()), 0);
    for (int32_t t = 0; t < prefix.back(); ++t) {
      const RowTile tile = locate_row_tile(offsets.data(), prefix.data(), E, t);
      ASSERT_GE(tile.rows, 1);
      ASSERT_LE(tile.rows, kBM);
      ASSERT_GE(tile.row0, offsets[size_t(tile.group)]);
      ASSERT_LE(tile.row0 + tile.rows, offsets[size_t(tile.group) + 1]) << "straddles a group";
      for (int r = 0; r < tile.rows; ++r) ++covered[size_t(tile.row0 + r)];
    }
    for (size_t r = 0; r < covered.size(); ++r) ASSERT_EQ(covered[r], 1) << "row " << r;
  }
}

TEST(GemmTiles, WeightTilesCoverEveryGroupOnce) {
  const int E = 3, m_tiles = 2, n_tiles = 5;
  std::set<std::tuple<int, int, int>> seen;
  for (int t = 0; t < E * m_tiles * n_tiles; ++t) {
    const WeightTile w = locate_weight_tile(m_tiles, n_tiles, t);
    ASSERT_TRUE(w.group < E && w.m0 < m_tiles * kBM && w.n0 < n_tiles * kBN);
    ASSERT_TRUE(seen.insert({w.group, w.m0, w.n0}).second);
  }
  EXPECT_EQ(seen.size(), size_t(E * m_tiles * n_tiles));
  EXPECT_EQ(locate_weight_tile(m_tiles, n_tiles, 6).n0, kBN);  // row-major within a group
}

// --- What wgmma reads against what TMA wrote ---------------------------------------------------
// TMA with CU_TENSOR_MAP_SWIZZLE_128B writes a box whose inner extent is 128 bytes as lines:
// element (inner i, outer j) lands at swizzle128(j·128 + 2i) from the box's start.
uint32_t tma_byte(uint32_t box_start, int inner, int outer) {
  return box_start + swizzle128(uint32_t(outer) * kLineBytes + 2u * uint32_t(inner));
}

// wgmma's canonical 128-byte-swizzled layouts for 16-bit elements (T = 8 per 16 bytes), with
// the descriptor's start, leading (LBO) and stride (SBO) byte offsets; (mn, k) is the element
// of the 64- or 128-wide, 16-deep operand. PTX ISA, "Canonical Layouts":
//   K-major  ((8,m),(T,2k)) : ((8T,SBO),(1,T))
//   MN-major ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))
uint32_t wgmma_byte(Major major, uint32_t start, uint32_t lbo, uint32_t sbo, int mn, int k) {
  uint32_t offset;
  if (major == Major::k) {
    offset = 2u * uint32_t((mn % 8) * 64 + k % 8 + 8 * (k / 8)) + uint32_t(mn / 8) * sbo;
  } else {
    offset = 2u * uint32_t(mn % 64 + 64 * (k % 8)) + uint32_t(mn / 64) * lbo + uint32_t(k / 8) * sbo;
  }
  return swizzle128(start + offset);
}

// One staged operand: how TMA laid the global element for (mn, k-of-the-stage) into the tile,
// given as (box index, inner, outer) — the kernel's load_stage — and how the kernel points
// wgmma at the 64-row slice `slice` for step kk.
struct Staged {
  const char* name;
  Major major;
  int mn_extent;  // 64 (a warpgroup's A) or 128 (B)
  int slices;     // A: one slice per consumer warpgroup; B: 1
  // The box holding element (mn, k) of the tile, and its coordinates inside the box.
  void (*place)(int mn, int k, int& box, int& inner, int& outer);
  int box_bytes;  // the distance between the tile's boxes
};

void check_staged(const Staged& s) {
  for (int slice = 0; slice < s.slices; ++slice)
    for (int kk = 0; kk < kBK / 16; ++kk)
      for (int mn = 0; mn < s.mn_extent; ++mn)
        for (int k = 0; k < 16; ++k) {
          const int tile_mn = slice * 64 + mn, tile_k = kk * 16 + k;
          int box, inner, outer;
          s.place(tile_mn, tile_k, box, inner, outer);
          const uint32_t written = tma_byte(uint32_t(box * s.box_bytes), inner, outer);
          const uint32_t read = wgmma_byte(s.major, operand_offset(s.major, slice, kk),
                                           leading_bytes(s.major), kStrideBytes, mn, k);
          ASSERT_EQ(read, written) << s.name << ": slice " << slice << " step " << kk << " element ("
                                   << mn << ", " << k << ")";
        }
}

TEST(GemmTiles, KMajorOperandsReadWhatTmaWrote) {
  // forward A (x) and dx A (dy): one box {64 of the reduction, 128 rows}: line = row.
  check_staged({"x / dy rows", Major::k, 64, kConsumerWarpgroups,
                [](int mn, int k, int& box, int& inner, int& outer) { box = 0, inner = k, outer = mn; },
                kTileABytes});
  // forward B (W[e], N_out rows of K): one box {64 of K, 128 of N_out}.
  check_staged({"W rows", Major::k, kBN, 1,
                [](int mn, int k, int& box, int& inner, int& outer) { box = 0, inner = k, outer = mn; },
                kTileBBytes});
}

TEST(GemmTiles, MnMajorOperandsReadWhatTmaWrote) {
  // dx B (W[e] read along N_out), dw B (x rows), dw A (dy rows): boxes {64 of mn, 64 of the
  // reduction}, kBoxBytes apart: line = reduction step.
  const auto place = [](int mn, int k, int& box, int& inner, int& outer) {
    box = mn / kAtomElems, inner = mn % kAtomElems, outer = k;
  };
  check_staged({"B, N-major", Major::mn, kBN, 1, place, kBoxBytes});
  check_staged({"dw A, M-major", Major::mn, 64, kConsumerWarpgroups, place, kBoxBytes});
}

TEST(GemmTiles, SwizzleKeepsLinesWhole) {
  // The weight gradient zeroes whole 128-byte lines of a stage: the swizzle must map each line
  // onto itself.
  for (uint32_t b = 0; b < 8 * 1024; ++b) ASSERT_EQ(swizzle128(b) / kLineBytes, b / kLineBytes);
}

}  // namespace
}  // namespace remoe::gemm
