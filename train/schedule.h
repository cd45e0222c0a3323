// The two per-step controllers of a run.
//
// learning_rate: linear warmup to lr over warmup steps, then cosine decay to min_lr at the last
// step (REMOE_SPEC §5). step is 0-based; warmup_steps = −1 means 1% of the steps (at least 1).
//
// LambdaController: ReMoE's adaptive regulariser coefficient (REMOE_SPEC §2). Once per optimizer
// step, after the step, with the step's measured sparsity S:
//   λ ← λ · α  if S < target (too dense: push harder),  λ ← λ / α otherwise (a tie decreases λ).
#pragma once

#include <cstdint>

#include "train/config.h"

namespace remoe::train {

int64_t warmup_steps(const TrainConfig& config);
double learning_rate(const TrainConfig& config, int64_t step);

struct LambdaController {
  double lambda;
  double alpha;
  double target_sparsity;  // 1 − k/E

  void update(double sparsity) {
    if (sparsity < target_sparsity)
      lambda *= alpha;
    else
      lambda /= alpha;
  }
};

}  // namespace remoe::train
