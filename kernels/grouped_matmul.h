// Grouped (per-expert) GEMM over variable-sized row groups, the experts' linear layers:
//   rows r in [offsets[e], offsets[e+1]) compute y[r] = x[r] · W[e]ᵀ.
//   x: (N, K); w: (E, N_out, K); y: (N, N_out); offsets: (E + 1), offsets[0] = 0,
//   offsets[E] = N, non-decreasing; empty groups allowed.
// Backward writes dx (N, K) = dy · W[e] per group (M-grouped, like forward) and
// dw (E, N_out, K) = dy[group]ᵀ · x[group] (K-grouped; zero for empty groups).
// Either output may be null.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "kernels/bf16.h"
#include "kernels/stream.h"

namespace remoe::cpu {

template <typename T>
void grouped_matmul_forward(T* y, const T* x, const T* w, const int32_t* offsets,
                            int64_t n_groups, int64_t k_in, int64_t n_out);

template <typename T>
void grouped_matmul_backward(T* dx, T* dw, const T* dy, const T* x, const T* w,
                             const int32_t* offsets, int64_t n_groups, int64_t k_in,
                             int64_t n_out);

}  // namespace remoe::cpu

// CUDA launchers: the same contracts on device pointers, one launch per call for all groups —
// the offsets are read on the device, never on the host. Two implementations:
//   tiled  (v1, kernels/cuda/grouped_matmul.cu): bf16 on tensor cores through WMMA 16×16×16
//          (fp32 accumulate, one bf16 rounding of each output), f32 on fp32 FMA tiles (for
//          tests against the CPU and f32 runs); any shape.
//   hopper (v2, kernels/cuda/grouped_matmul_sm90.cu): bf16 only, sm_90a builds on a compute
//          capability 9.0 GPU; TMA loads through an mbarrier pipeline into wgmma, persistent
//          CTAs over the groups' tiles; needs K and N_out multiples of 8 and 16-byte aligned
//          buffers (TMA's stride and address rules).
// `automatic` takes hopper where it applies, else tiled — unless the environment variable
// REMOE_GROUPED_GEMM (auto, tiled or hopper) says otherwise for the whole run; asking for
// hopper where it does not apply is an error that says why. kernels/README.md has the ladder
// from one to the other.
// max_rows bounds N = offsets[E] (the capacity of x, y, dx, dy; e.g. T·E for dropless ReLU
// routing): the grid is sized from it and a device offsets[E] > max_rows traps.
// n_groups ≤ kGroupedMatmulMaxGroups (each block reads the offsets into shared memory).
// dw is written for every group (zero for empty ones) and is deterministic: no split over rows.
namespace remoe::cuda {

inline constexpr int64_t kGroupedMatmulMaxGroups = 1024;

enum class GroupedMatmulImpl { automatic, tiled, hopper };

// The run's choice from REMOE_GROUPED_GEMM (automatic when unset or "auto"; a bad value is an
// error naming the variable). The dense bf16 x·wᵀ of kernels/matmul.h follows it too: it runs
// on the same Hopper kernels as one group.
GroupedMatmulImpl grouped_matmul_impl_from_env();

// Why the hopper implementation cannot run this call ("" when it can): the build, the device,
// the element type (bf16 only), the sizes or the buffers' alignment.
template <typename T>
std::string grouped_matmul_hopper_unsupported(int64_t k_in, int64_t n_out,
                                              std::initializer_list<const void*> buffers);

template <typename T>
void grouped_matmul_forward(T* y, const T* x, const T* w, const int32_t* offsets,
                            int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                            cudaStream_t stream,
                            GroupedMatmulImpl impl = GroupedMatmulImpl::automatic);

template <typename T>
void grouped_matmul_backward(T* dx, T* dw, const T* dy, const T* x, const T* w,
                             const int32_t* offsets, int64_t n_groups, int64_t k_in,
                             int64_t n_out, int64_t max_rows, cudaStream_t stream,
                             GroupedMatmulImpl impl = GroupedMatmulImpl::automatic);

}  // namespace remoe::cuda
