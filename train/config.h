// The run's configuration: a TOML file plus `--section.key=value` overrides (the command line
// wins), checked against one option table that also generates the help text, so the two never
// drift. Unknown keys are rejected with the nearest valid key suggested; values are
// type-checked; every error names the file (or "command line"), the key, the value and what is
// expected.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "autodiff/tensor.h"
#include "model/config.h"
#include "model/precision.h"
#include "train/token_source.h"

namespace remoe::train {

// train.device: "auto" takes the GPU when remoe was built with CUDA and one is visible.
enum class DeviceChoice { auto_, cpu, cuda };

// The device a run computes on; "cuda" without a usable GPU is an error saying why.
Device resolve_device(DeviceChoice choice);

// train.precision (model/precision.h): "auto" is bf16 on the GPU and f32 on the CPU (where bf16
// is emulated, and slower than f32).
enum class PrecisionChoice { auto_, f32, bf16 };
model::Precision resolve_precision(PrecisionChoice choice, Device device);

struct TrainConfig {
  model::ModelConfig model;  // [model]

  // [data]
  std::string data_path;      // text file, llm.c shard(s) (a glob) or Megatron prefix
  double val_fraction = 0.1;  // the last fraction of the tokens is the validation split
  DataFormat data_format = DataFormat::text;  // how data_path is read (train/token_source.h)
  std::string val_path;           // validation data in the same format; "": use val_fraction
  bool within_documents = false;  // windows never cross a document boundary (megatron only)

  // [train]
  uint64_t seed = 1337;
  int64_t steps = 1000;       // optimizer steps
  int64_t batch_size = 8;     // sequences per micro-batch
  int64_t seq_len = 256;
  int64_t grad_accum = 1;     // micro-batches per optimizer step
  int64_t max_skips = 5;      // consecutive non-finite steps before the run stops
  DeviceChoice device = DeviceChoice::auto_;  // where the run computes (train.device)
  PrecisionChoice precision = PrecisionChoice::auto_;  // bf16 GEMMs or all f32 (train.precision)

  // [optim] AdamW, linear warmup then cosine decay to min_lr (REMOE_SPEC §5)
  double lr = 5e-4;
  double min_lr = 5e-5;
  int64_t warmup_steps = -1;  // −1: 1% of steps
  double weight_decay = 0.01; // not applied to 1-D parameters
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double grad_clip = 1.0;     // max global grad norm; 0 disables clipping

  // [remoe] the adaptive regulariser coefficient (REMOE_SPEC §2)
  double lambda0 = 1e-8;
  double alpha = 1.2;

  // [eval]
  int64_t eval_every = 100;   // steps between validation passes; 0: only at the end
  int64_t eval_batches = 8;   // micro-batches per validation pass

  // [checkpoint]
  int64_t checkpoint_every = 0;  // steps between checkpoints; 0: only at the end
  int64_t keep_last = 3;         // complete checkpoints kept (the newest ones); >= 1
  int64_t keep_every = 0;        // also keep steps that are multiples of it; 0: none

  // [dist] how a job of several ranks (one per GPU) splits the work; a job of one ignores it
  int64_t expert_parallel = 1;  // ranks that share one copy of the experts, each holding E / it
  double bucket_mb = 25;        // MiB of gradients all-reduced at once (data parallel)
  bool zero1 = false;           // AdamW's moments sharded over the ranks (ZeRO stage 1)

  // [log]
  std::string run_dir = "runs/default";  // metrics.jsonl, config.toml, checkpoints/
  int64_t log_every = 1;                 // steps between console lines
  bool tensorboard = false;              // also write scalars to <run_dir>/tb/ (TensorBoard)

  // Throws remoe::Error naming the first inconsistent key (calls model.validate() too).
  void validate() const;
  // The checks that need the job's size: dist.expert_parallel must divide world_size (and not
  // exceed it). Throws naming both.
  void validate_world(int world_size) const;
};

// `source` names the text in errors (a file path, usually).
TrainConfig parse_config(std::string_view toml_text, std::string_view source,
                         const std::vector<std::string>& overrides);
// Reads `path` (error if missing or unreadable), then parse_config.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides);

// Every key with its resolved value, as TOML that parse_config reads back to the same config.
std::string to_toml(const TrainConfig& config);

// A key whose value differs between two configs, with both values as to_toml writes them.
struct ConfigDifference {
  std::string key;  // "section.name"
  std::string a, b;
};
// Every differing key, in option-table order.
std::vector<ConfigDifference> config_differences(const TrainConfig& a, const TrainConfig& b);
// The option table: one line per key with its type, default and description, then the
// Megatron-LM flags accepted as aliases.
std::string options_help();
// (Megatron-LM flag without "--", remoe key) for every alias.
std::vector<std::pair<std::string, std::string>> megatron_aliases();

}  // namespace remoe::train
