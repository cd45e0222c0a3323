// `remoe eval`: the mean cross-entropy of a checkpoint's model on fixed windows of text, and the
// loading of a model from a checkpoint that eval, sample and export share.
//
// The windows are data.h's fixed_batch windows of the checkpoint config's seq_len and
// batch_size: on the run's own validation split they are exactly the windows the trainer
// evaluates on, so with the same number of batches the loss equals the trainer's validation
// loss at that step.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "train/config.h"

namespace remoe::train {

// A checkpoint directory itself (it holds COMPLETE) or a run directory (its newest complete
// checkpoint).
std::string resolve_checkpoint(const std::string& path);

// The model of a checkpoint, rebuilt from the config saved in its state.json, with its weights.
struct CheckpointModel {
  std::string dir;  // the checkpoint directory
  int64_t step = 0;
  double lambda = 0;  // the λ saved with it (0 if absent)
  TrainConfig config;
  model::Transformer model;
};

// `path` as in resolve_checkpoint. Errors name the file and what is wrong (no config in
// state.json, a config that does not parse, weights that do not fit the config).
CheckpointModel load_checkpoint_model(const std::string& path);

struct EvalOptions {
  std::string text;     // a text file read as bytes, all of it; empty: the run's validation split
  int64_t batches = 0;  // batches of fixed windows; 0: the config's eval.batches
  std::string dump_logits;  // non-empty: the logits of the first window go here (see below)
};

struct EvalResult {
  std::string checkpoint;  // the checkpoint directory evaluated
  int64_t step = 0;
  std::string text;   // the file the windows came from
  std::string split;  // "validation" (the run's own split) or "all" (--text)
  int64_t batches = 0, batch_size = 0, seq_len = 0;
  int64_t tokens = 0;  // predicted bytes: batches · batch_size · seq_len
  double loss = 0;     // mean cross-entropy, nats per byte
  double bpb = 0;      // bits per byte
  // MoE models: per layer, 1 − Σ A / (tokens · E) over every evaluated window, and each
  // expert's share of the layer's active (token, expert) pairs (the trainer's metrics, measured
  // on these windows). Empty for a dense model.
  std::vector<double> layer_sparsity;
  std::vector<std::vector<double>> expert_load;

  nlohmann::ordered_json to_json() const;
  std::string line() const;  // one human-readable line
};

// With options.dump_logits = FILE, the (seq_len, vocab) logits of the first window of the first
// batch are written to FILE as raw little-endian f32, row after row, and FILE.json gets
// {"shape": [seq_len, vocab], "dtype": "float32", "byte_order": "little", "input_ids": [...],
// "checkpoint": ..., "step": ...} — what scripts/compare_hf.py reads.
EvalResult evaluate_checkpoint(const std::string& checkpoint, const EvalOptions& options);

}  // namespace remoe::train
