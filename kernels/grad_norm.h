// Global gradient norm and clipping (torch.nn.utils.clip_grad_norm_ semantics):
//   norm = sqrt(Σ over tensors Σ g²); coef = max_norm / (norm + 1e-6); if coef < 1, g ← coef · g.
// sum_squares accumulates in double in index order (deterministic); the op layer adds the
// tensors' sums in parameter order. scale_inplace multiplies n values by s.
#pragma once

#include <cstdint>

namespace remoe::cpu {

template <typename T> double sum_squares(const T* x, int64_t n);
template <typename T> void scale_inplace(T* x, double s, int64_t n);

}  // namespace remoe::cpu
