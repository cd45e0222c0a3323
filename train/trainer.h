// The training loop of `remoe train`, on the CPU (the GPU path joins with the CUDA backend).
//
// One optimizer step: grad_accum micro-batches of batch_size random windows; each contributes
// (cross-entropy + Σ_l aux_l) / grad_accum to the gradients (REMOE_SPEC §2: the LM loss and the
// regulariser are averaged over micro-batches alike); then gradient clipping, AdamW with the
// scheduled learning rate (no weight decay on 1-D parameters), and — for ReLU routing — the λ
// update from the step's sparsity. Every step appends a JSON line to <run_dir>/metrics.jsonl;
// validation runs every eval_every steps and at the end; checkpoints are written every
// checkpoint_every steps and at the end, and a run whose run_dir holds one resumes from it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/config.h"

namespace remoe::train {

struct StepRecord {
  int64_t step = 0;           // 1-based: the number of optimizer steps taken
  double loss = 0;            // mean cross-entropy over the step's micro-batches (nats)
  double aux = 0;             // mean Σ_l aux_l over the micro-batches
  double lr = 0;
  double lambda = 0;          // the λ this step used
  double sparsity = 0;        // S of REMOE_SPEC §2 (MoE only)
  double grad_norm = 0;       // before clipping
  double tokens_per_s = 0;
  std::vector<double> layer_sparsity;           // per MoE layer, averaged over micro-batches
  std::vector<std::vector<double>> expert_load; // per MoE layer: share of routed tokens per expert
  bool has_val = false;
  double val_loss = 0;        // nats per byte
  double val_bpb = 0;         // bits per byte
};

struct RunResult {
  std::vector<StepRecord> steps;  // the steps this invocation ran
  double final_val_loss = 0;
  double final_lambda = 0;
};

// Runs config.steps optimizer steps (fewer when resuming). `on_step` sees each record after it
// is logged (tests use it; may be empty).
RunResult run_training(const TrainConfig& config,
                       const std::function<void(const StepRecord&)>& on_step = {});

}  // namespace remoe::train
