// The MoE layer (REMOE_SPEC §1-3), built from the op layer:
//   routing (model/routing.h: logits z = x Wrᵀ → ReLU, softmax top-k, expert choice or hash,
//   with TopK's optional capacity dropping) → permutation of the active pairs →
//   gather → grouped W1, W3 → SwiGLU → grouped W2 → token-major weighted combine,
// plus the layer's regulariser: ReMoE's load-balanced L1 (or plain L1) with coefficient λ on
// the ReLU gates, or TopK's aux loss on the softmax probabilities, plus the optional z-loss.
//
// Expert parallel (ep.enabled()): the rank holds L = E / W of the experts, the block
// [rank·L, (rank+1)·L), and the full router. Routing, permutation, gates, the regulariser and
// the statistics are those of the rank's own tokens, exactly as without expert parallelism;
// only the expert FFNs run elsewhere: the routed rows go to their experts' ranks with an
// all-to-all, the grouped GEMMs run there on each rank's experts, and the results come back for
// the combine (dist/expert_parallel.h draws the path). Every rank calls the same collectives
// in the same order, whatever its tokens route to (nothing at all included).
#pragma once

#include <cstdint>
#include <vector>

#include "autodiff/ops.h"
#include "dist/expert_parallel.h"
#include "model/config.h"
#include "model/precision.h"
#include "model/routing.h"

namespace remoe::model {

// E experts without expert parallelism; L = E / W local ones with it (the router stays (E, d)).
struct MoeWeights {
  Tensor router;  // (E, d); undefined for hash routing
  Tensor w1;      // (E or L, F, d)
  Tensor w3;      // (E or L, F, d)
  Tensor w2;      // (E or L, d, F)
};

// What the trainer reads back from one MoE layer in one forward pass (the rank's own tokens).
struct MoeLayerStats {
  double sparsity = 0;                 // 1 − Σ A / (T·E)
  std::vector<int32_t> expert_counts;  // c_e: routed tokens per expert, all E (after any dropping)
  int64_t dropped = 0;                 // (token, expert) pairs dropped by the capacity
  int64_t routed = 0;                  // pairs routed before dropping
  double z_loss = 0;                   // the z-loss part of aux (0 when off)
  // (T, E) i32, 1 on the active (token, expert) pairs after any dropping: the routing itself,
  // for `remoe analyze` (train/analyze.h). A handle to the tensor routing already made, on
  // the layer's device; nothing is copied unless a caller reads it.
  Tensor mask;
};

struct MoeOutput {
  Tensor y;    // (T, d)
  Tensor aux;  // () the layer's regulariser
  MoeLayerStats stats;
};

// x: (T, d), T ≥ 1. lambda is ReLU routing's regulariser coefficient (unused by TopK).
// ep: the expert-parallel group (default: none); with it, w holds this rank's L experts.
// context: the token ids (hash routing), the selection bias and the training step (routing.h).
// precision: the expert GEMMs' (model/precision.h); the router is f32 whatever it says.
MoeOutput moe_forward(const Tensor& x, const MoeWeights& w, const ModelConfig& config,
                      double lambda, const dist::ExpertParallel& ep = {},
                      const RouteContext& context = {}, Precision precision = Precision::f32);

}  // namespace remoe::model
