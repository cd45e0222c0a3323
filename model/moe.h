// The MoE layer (REMOE_SPEC §1-3), built from the op layer:
//   routing (model/routing.h: logits z = x Wrᵀ → ReLU, softmax top-k, expert choice or hash,
//   with TopK's optional capacity dropping) → permutation of the active pairs →
//   gather → grouped W1, W3 → SwiGLU → grouped W2 → token-major weighted combine,
// plus the layer's regulariser: ReMoE's load-balanced L1 (or plain L1) with coefficient λ on
// the ReLU gates, or TopK's aux loss on the softmax probabilities, plus the optional z-loss.
#pragma once

#include <cstdint>
#include <vector>

#include "autodiff/ops.h"
#include "model/config.h"
#include "model/routing.h"

namespace remoe::model {

struct MoeWeights {
  Tensor router;  // (E, d); undefined for hash routing
  Tensor w1;      // (E, F, d)
  Tensor w3;      // (E, F, d)
  Tensor w2;      // (E, d, F)
};

// What the trainer reads back from one MoE layer in one forward pass.
struct MoeLayerStats {
  double sparsity = 0;                 // 1 − Σ A / (T·E)
  std::vector<int32_t> expert_counts;  // c_e: routed tokens per expert (after any dropping)
  int64_t dropped = 0;                 // (token, expert) pairs dropped by the capacity
  int64_t routed = 0;                  // pairs routed before dropping
  double z_loss = 0;                   // the z-loss part of aux (0 when off)
};

struct MoeOutput {
  Tensor y;    // (T, d)
  Tensor aux;  // () the layer's regulariser
  MoeLayerStats stats;
};

// x: (T, d). lambda is ReLU routing's regulariser coefficient (unused by TopK). context: the
// token ids (hash routing), the selection bias and the training step (routing.h).
MoeOutput moe_forward(const Tensor& x, const MoeWeights& w, const ModelConfig& config,
                      double lambda, const RouteContext& context = {});

}  // namespace remoe::model
