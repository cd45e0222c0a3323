// A run directory and a small generated text of its own under the system temp dir, removed at
// the end, with a ReMoE config tiny enough that a step takes a millisecond or so: what the
// trainer's tests run on.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/temp_dir.h"
#include "train/config.h"

namespace remoe::train {

class Sandbox {
 public:
  Sandbox() {
    // ~24 KB of text with some structure to learn.
    std::ofstream out(dir_.path() / "data.txt", std::ios::binary);
    const char* words[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "a ", "lazy ",
                           "dog. ", "And ", "then ", "it ", "sleeps.\n"};
    uint64_t x = 12345;
    for (int i = 0; i < 5000; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      out << words[(x >> 33) % 13];
    }
  }

  // ReMoE (ReLU routing, adaptive λ) small enough that a step takes a millisecond or so.
  TrainConfig config() const {
    TrainConfig c;
    c.model.d_model = 16;
    c.model.n_layers = 1;
    c.model.n_heads = 2;
    c.model.n_kv_heads = 1;
    c.model.d_ffn = 32;
    c.model.ffn = model::FfnKind::moe;
    c.model.router = model::RouterKind::relu;
    c.model.n_experts = 4;
    c.model.top_k = 1;
    c.model.init_std = 0.02;
    c.data_path = (dir_.path() / "data.txt").string();
    c.steps = 8;
    c.batch_size = 2;
    c.seq_len = 16;
    c.lr = 3e-3;
    c.min_lr = 3e-4;
    c.warmup_steps = 1;
    c.eval_every = 0;
    c.eval_batches = 1;
    c.log_every = 1000;
    c.run_dir = (dir_.path() / "run").string();
    c.device = DeviceChoice::cpu;  // the cpu suite's runs stay on the CPU on a GPU machine too
    return c;
  }
  std::filesystem::path checkpoints() const { return dir_.path() / "run" / "checkpoints"; }
  std::filesystem::path metrics() const { return dir_.path() / "run" / "metrics.jsonl"; }

 private:
  test::TempDir dir_;
};

}  // namespace remoe::train
