// Text generation from a checkpoint: the model is rebuilt from the config saved in the
// checkpoint, its weights loaded, and bytes drawn one at a time from softmax(logits / T),
// restricted to the top_k most likely bytes when top_k > 0. The whole context (at most seq_len
// bytes, the window the model was trained on) is re-run for each byte: no KV cache, plain and
// slow, fine for small models.
#pragma once

#include <cstdint>
#include <string>

namespace remoe::train {

struct SampleOptions {
  std::string prompt = "\n";
  int64_t length = 200;       // bytes to generate
  double temperature = 0.8;   // > 0
  int64_t top_k = 0;          // 0: all 256 bytes
  uint64_t seed = 0;
};

// `checkpoint` is a checkpoint directory or a run directory (its newest checkpoint).
std::string sample_text(const std::string& checkpoint, const SampleOptions& options);

}  // namespace remoe::train
