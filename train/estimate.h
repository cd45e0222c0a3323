// What a run will cost, from its config alone (`remoe train --dry-run`): parameters (total and
// active per token), training FLOPs per token, and an estimate of memory.
//
// FLOPs per token = 6 · N_matmul + 12 · L · S · Hq · Dh, the convention of PaLM and nanoGPT's MFU:
// N_matmul counts the weights a token multiplies through (attention, k experts and their router
// or the dense FFN, the output layer; not the embedding lookup), the second term is attention's
// QKᵀ and PV without the causal halving. ReLU routing uses k experts per token once sparsity has
// settled (Stage III) and up to all E in Stage I; both are reported.
#pragma once

#include <cstdint>
#include <string>

#include "train/config.h"

namespace remoe::train {

struct RunEstimate {
  int64_t params = 0;            // every weight
  int64_t active_params = 0;     // with k of the E experts; the paper counts the whole embedding
  double flops_per_token = 0;    // training (forward + backward), k experts per token
  double flops_per_token_dense = 0;  // the same with every expert active (ReLU Stage I)
  double weight_bytes = 0;       // parameters + gradients + AdamW moments, f32
  double activation_bytes = 0;   // one micro-batch's saved activations, k experts per token
  double activation_bytes_dense = 0;  // the same with every expert active
};

RunEstimate estimate_run(const TrainConfig& config);
std::string describe_estimate(const TrainConfig& config, const RunEstimate& e);

}  // namespace remoe::train
