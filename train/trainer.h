// The training loop of `remoe train`, on the CPU (the GPU path joins with the CUDA backend).
//
// One optimizer step: grad_accum micro-batches of batch_size random windows; each contributes
// (cross-entropy + Σ_l aux_l) / grad_accum to the gradients (REMOE_SPEC §2: the LM loss and the
// regulariser are averaged over micro-batches alike); then gradient clipping, AdamW with the
// scheduled learning rate (no weight decay on 1-D parameters), and — for ReLU routing — the λ
// update from the step's sparsity. Every step appends a JSON line to <run_dir>/metrics.jsonl;
// validation runs every eval_every steps and at the end; checkpoints are written every
// checkpoint_every steps and at the end, and a run whose run_dir holds one resumes from it.
//
// Trouble (train/README.md has the user's view):
// - Resume: the checkpoint's saved config must agree with this run's on every key that decides
//   what is trained and on what (check_resume_config); the checkpoint's model, optimizer and
//   state are all read and checked before any parameter is overwritten.
// - Non-finite steps: a step whose loss, aux loss or gradient norm is not finite changes
//   nothing (no update, λ kept, gradients dropped) but still counts as a step and has consumed
//   its batches, so the data stream stays a function of the step number (a resumed run sees the
//   same windows) and the bad batch is not retried. After train.max_skips of them in a row the
//   run saves a checkpoint (its weights are those of the last good step) and throws.
// - SIGINT / SIGTERM: the step in progress finishes, a checkpoint is saved and run_training
//   returns with RunResult::interrupted_by set (`remoe train` then exits 128 + the signal
//   number). A second signal while that happens stops the process at once.
// - Retention: after each checkpoint, prune_checkpoints(keep_last, keep_every).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "autodiff/tensor.h"
#include "dist/communicator.h"
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
  std::optional<double> gpu_memory_peak;        // GPU runs: the step's peak bytes in use (device.h)
  std::vector<std::pair<std::string, double>> phase_seconds;  // data, forward, backward,
                                                // (grad_sync,) optimizer: phase_timer.h
  std::vector<double> layer_sparsity;           // per MoE layer, averaged over micro-batches
  std::vector<std::vector<double>> expert_load; // per MoE layer: share of routed tokens per expert
  std::vector<double> dropped_fraction;         // per MoE layer: pairs dropped by the capacity
                                                // over pairs routed (TopK with a capacity factor)
  std::optional<double> z_loss;                 // mean Σ_l z-loss (part of aux) when it is on
  std::vector<std::vector<double>> router_bias; // per MoE layer: the expert biases this step used
  bool skipped = false;       // non-finite loss or gradient: no update was made
  std::string skip_reason;    // e.g. "grad norm is nan"
  bool has_val = false;
  double val_loss = 0;        // nats per byte
  double val_bpb = 0;         // bits per byte
};

struct RunResult {
  std::vector<StepRecord> steps;  // the steps this invocation ran
  double final_val_loss = 0;
  double final_lambda = 0;
  int interrupted_by = 0;         // SIGINT or SIGTERM when a signal stopped the run early; else 0
  std::string last_checkpoint;    // the directory of the last checkpoint written; empty if none
  bool already_complete = false;  // run_dir held a checkpoint of the last step: nothing was run
};

// Test-only hooks into the loop; a real run passes none.
struct TrainingHooks {
  // Called once per step after the last micro-batch's backward, before the non-finite check,
  // clipping and the update: the gradients are those of the step. `step` is 1-based (the
  // StepRecord's). Tests poison a gradient here to exercise the skipping of non-finite steps.
  std::function<void(const std::vector<Tensor>& params, int64_t step)> after_backward;
};

// Runs config.steps optimizer steps (fewer when resuming). `on_step` sees each record after it
// is logged (tests use it; may be empty). Throws remoe::Error on bad input, on a checkpoint
// that cannot be resumed and after train.max_skips non-finite steps in a row.
RunResult run_training(const TrainConfig& config,
                       const std::function<void(const StepRecord&)>& on_step = {},
                       const TrainingHooks& hooks = {});

// The same on every rank of `comm` (each rank calls it, with the same config), data parallel:
// every rank holds the whole model; a step is train.grad_accum micro-batches on each rank —
// the same windows, in the same order, as one process with grad_accum · W micro-batches would
// take (rank r the r-th block of A) — each contributing (cross-entropy + Σ_l aux_l) / (A · W).
// Gradients are summed over ranks in buckets of dist.bucket_mb as the last backward finishes
// them (dist/data_parallel.h); the loss, the aux loss and the routing counts are summed over
// ranks, so S and λ are those of the whole step on every rank (REMOE_SPEC §2). Rank 0 alone
// writes the run directory and prints. A job of another size than the checkpoint's is refused
// on resume. `hooks.after_backward` sees the reduced gradients.
RunResult run_training(const TrainConfig& config, dist::Communicator& comm,
                       const std::function<void(const StepRecord&)>& on_step = {},
                       const TrainingHooks& hooks = {});

// Whether a resumed run may use a different value for `key` than the run that wrote the
// checkpoint: train.steps, train.max_skips and every optim.*, eval.*, checkpoint.* and log.*
// key (how long and how the run goes on, and what it writes). Any other key (model.*, data.*,
// train.seed/batch_size/seq_len/grad_accum, remoe.*, and keys added later unless listed here)
// decides what is trained on what, and must not change.
bool may_change_on_resume(std::string_view key);

// Throws naming every key that differs between `saved` (the config in the checkpoint at `dir`)
// and `current` and may not change on resume, each with both values.
void check_resume_config(const std::string& dir, const TrainConfig& saved,
                         const TrainConfig& current);

}  // namespace remoe::train
