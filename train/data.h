// Text read as bytes (vocabulary 256, no preprocessing), split by byte ranges into training
// and validation, and sampled as random contiguous windows with a seeded generator.
// Errors name the file and what is wrong (missing, unreadable, empty, a split shorter than one
// window).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/random.h"
#include "autodiff/tensor.h"

namespace remoe::train {

struct TextCorpus {
  std::string path;
  std::vector<uint8_t> bytes;
  int64_t train_end = 0;  // training bytes are [0, train_end), validation [train_end, size)
};

// val_fraction in [0, 1): the last ⌊size · val_fraction⌋ bytes are validation (at least one
// byte when val_fraction > 0, else an error). ".xz" paths are refused with a hint to decompress.
TextCorpus load_text(const std::string& path, double val_fraction);

struct Batch {
  Tensor inputs;   // (B·S) i32: bytes w[0..S) of each window, window after window
  Tensor targets;  // (B·S) i32: bytes w[1..S]
};

// Windows of S + 1 bytes starting uniformly in [begin, end − S − 1]: one Rng::below draw per
// window, windows in batch order. Keeps a pointer to `corpus`, which must outlive it.
class WindowSampler {
 public:
  // Error (naming the corpus and the split) when end − begin < seq_len + 1 or [begin, end) is
  // not inside the corpus.
  WindowSampler(const TextCorpus& corpus, int64_t begin, int64_t end, int64_t seq_len,
                uint64_t seed, const char* split_name);

  Batch next(int64_t batch_size);

  // The whole sampler state, for checkpoints: resuming from it replays the same windows.
  std::array<uint64_t, 4> state() const { return rng_.state(); }
  void set_state(const std::array<uint64_t, 4>& s) { rng_.set_state(s); }

 private:
  const TextCorpus* corpus_;
  int64_t begin_, end_, seq_len_;
  Rng rng_;
};

// The same n_batches · batch_size windows at every call, spread evenly over [begin, end): a
// validation loss that is comparable from one evaluation to the next. With span = end − begin
// − seq_len window starts and total = n_batches · batch_size windows, window j starts at
// begin + ⌊j · span / total⌋; batch batch_index holds windows [batch_index · batch_size,
// (batch_index + 1) · batch_size). batch_index < n_batches. `split_name` only labels errors.
Batch fixed_batch(const TextCorpus& corpus, int64_t begin, int64_t end, int64_t seq_len,
                  int64_t batch_size, int64_t batch_index, int64_t n_batches,
                  const char* split_name = "validation");

}  // namespace remoe::train
