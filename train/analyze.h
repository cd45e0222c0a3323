// `remoe analyze`: what a checkpoint's router does on some texts (REMOE_SPEC §6, "observed
// behaviour"), as one JSON document that scripts/plot_analysis.py draws and
// scripts/study_report.py tables.
//
// Every quantity is counted from the MoE layers' active masks A (T, E) (model/moe.h,
// MoeLayerStats::mask) of a no-grad forward at λ = 0 over fixed windows of each text (data.h
// fixed_batch: the windows of the checkpoint's seq_len, spread evenly over the whole file):
//
//   active experts of a token in layer l   Σ_e A[t, e]: experts with a nonzero gate (ReLU), k
//                                          for TopK (fewer only if capacity dropped a pair)
//   layer sparsity                         1 − Σ A / (T·E) over the text's tokens
//   expert usage [l][e]                    c_e / Σ_e' c_e': the share of the layer's routed
//                                          (token, expert) pairs that went to expert e; sums to 1
//   frequency buckets                      the relative frequency f of a token's byte x_t (or of
//                                          the byte pair (x_{t−1}, x_t), both inside the window)
//                                          in the training text; bucket b holds
//                                          10^−(b+1) ≤ f < 10^−b (b = 0 also f = 1), the last
//                                          decade bucket everything rarer, then "unseen" (f = 0);
//                                          per bucket the mean active experts per layer
//   flip rate (two checkpoints, the same   per layer, the fraction of the T·E mask entries that
//   windows)                               differ (mask_flip_rate), and the fraction of tokens
//                                          whose set of active experts differs (token_flip_rate)
//
// Texts are read as bytes through the trainer's reader (token_source.h open_text): an .xz file
// is refused with the command that decompresses it, as for training. A dense checkpoint has no
// router and is refused; so is a --compare checkpoint whose model.* config differs.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/token_source.h"

namespace remoe::train {

struct AnalyzeText {
  std::string name;  // the label in the JSON and the plots: [A-Za-z0-9_.-]+, unique
  std::string path;  // a text file, read as bytes
};

struct AnalyzeOptions {
  std::vector<AnalyzeText> texts;  // at least one
  // Where token frequencies come from: a text file, all of it; "": the checkpoint's own
  // training split (data.format = "text" only), read as the trainer reads it.
  std::string train_text;
  std::string compare;   // a second checkpoint (or run directory) of the same model; "": none
  int64_t tokens = 131072;  // per text, at least; rounded up to whole batches of windows
  int64_t batch_size = 0;   // windows per forward; 0: the checkpoint config's train.batch_size
};

// "text=path" (the --text argument) into an AnalyzeText; errors name the argument.
AnalyzeText parse_analyze_text(const std::string& arg);

// Byte and byte-pair counts of tokens [begin, end) of a byte source; pairs inside the range.
struct ByteFrequencies {
  std::vector<int64_t> bytes = std::vector<int64_t>(256, 0);
  std::vector<int64_t> pairs = std::vector<int64_t>(256 * 256, 0);  // [prev · 256 + next]
  int64_t n_bytes = 0, n_pairs = 0;
};
ByteFrequencies count_byte_frequencies(const TokenSource& source, int64_t begin, int64_t end);

// Decade buckets of relative frequency count / total, exact in integers: bucket b (0 ≤ b <
// kFrequencyDecades − 1) when count · 10^(b+1) ≥ total > count · 10^b (b = 0 also takes
// count = total); kFrequencyDecades − 1 for anything rarer but seen; kUnseenBucket for 0.
inline constexpr int kFrequencyDecades = 8;
inline constexpr int kUnseenBucket = kFrequencyDecades;
int frequency_bucket(int64_t count, int64_t total);

// The whole analysis. Errors (remoe::Error) name the flag, file or value at fault.
nlohmann::ordered_json analyze_checkpoint(const std::string& checkpoint,
                                          const AnalyzeOptions& options);

}  // namespace remoe::train
