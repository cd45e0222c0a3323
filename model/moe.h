// The MoE layer (REMOE_SPEC §1-3), dropless, built from the op layer:
//   logits z = x Wrᵀ → router (ReLU or softmax top-k) → permutation of the active pairs →
//   gather → grouped W1, W3 → SwiGLU → grouped W2 → token-major weighted combine,
// plus the layer's regulariser: ReMoE's load-balanced L1 (or plain L1) with coefficient λ on
// the ReLU gates, or TopK's aux loss on the softmax probabilities.
#pragma once

#include <cstdint>
#include <vector>

#include "autodiff/ops.h"
#include "model/config.h"

namespace remoe::model {

struct MoeWeights {
  Tensor router;  // (E, d)
  Tensor w1;      // (E, F, d)
  Tensor w3;      // (E, F, d)
  Tensor w2;      // (E, d, F)
};

// What the trainer reads back from one MoE layer in one forward pass.
struct MoeLayerStats {
  double sparsity = 0;                 // 1 − Σ A / (T·E)
  std::vector<int32_t> expert_counts;  // c_e: routed tokens per expert
};

struct MoeOutput {
  Tensor y;    // (T, d)
  Tensor aux;  // () the layer's regulariser
  MoeLayerStats stats;
};

// x: (T, d). lambda is ReLU routing's regulariser coefficient (unused by TopK).
MoeOutput moe_forward(const Tensor& x, const MoeWeights& w, const ModelConfig& config,
                      double lambda);

}  // namespace remoe::model
