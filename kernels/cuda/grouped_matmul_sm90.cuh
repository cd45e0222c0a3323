// The Hopper grouped GEMM's launchers (kernels/cuda/grouped_matmul_sm90.cu), called by the
// dispatch in kernels/cuda/grouped_matmul.cu once grouped_matmul_hopper_unsupported said "".
// Contracts as kernels/grouped_matmul.h; bf16 only. offsets may be null with n_groups = 1: one
// group of max_rows rows, a dense x·wᵀ (kernels/cuda/matmul.cu runs its linear layers so).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/bf16.h"

namespace remoe::cuda::detail {

// "" when this build has the sm_90a kernels and the current device is compute capability 9.0.
std::string sm90_unavailable();

void sm90_grouped_forward(bf16* y, const bf16* x, const bf16* w, const int32_t* offsets,
                          int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                          cudaStream_t stream);
void sm90_grouped_dx(bf16* dx, const bf16* dy, const bf16* w, const int32_t* offsets,
                     int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                     cudaStream_t stream);
void sm90_grouped_dw(bf16* dw, const bf16* dy, const bf16* x, const int32_t* offsets,
                     int64_t n_groups, int64_t k_in, int64_t n_out, int64_t max_rows,
                     cudaStream_t stream);

}  // namespace remoe::cuda::detail
