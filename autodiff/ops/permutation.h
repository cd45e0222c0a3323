// Private to the dispatch ops (permute, grouped_matmul, combine): the check every op that takes
// a Permutation runs first, so a hand-built or stale one is an error, never an out-of-bounds
// read. Defined in permute.cpp.
#pragma once

#include "autodiff/ops.h"

namespace remoe::ops::detail {

// The tensors are defined i32 on one device, of shapes expert_offsets (E + 1), token_index (N),
// row_of (T, E) with N = n_rows; on the CPU also their values: offsets run from 0 to N without
// decreasing, token_index lies in [0, T) and row_of in [−1, N). (On the GPU the values would
// need a readback per op; ops::permute made them there, and nothing else writes them.)
void check_permutation(const char* op, const Permutation& perm);

}  // namespace remoe::ops::detail
