// A run's tokens (any format of train/token_source.h), split into training and validation, and
// sampled as random contiguous windows with a seeded generator, or as fixed evenly spread
// windows for validation. Errors name the file(s) and what is wrong (a split shorter than one
// window, no document long enough for one, a token id outside the vocabulary).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/random.h"
#include "autodiff/tensor.h"
#include "train/token_source.h"

namespace remoe::train {

// Training windows come from tokens [0, train_end) of `train`; validation windows from
// [val_begin, val.size()) of `val`, which is `train` itself unless data.val_path is set.
struct Corpus {
  TokenSource train;
  int64_t train_end = 0;
  TokenSource val;
  int64_t val_begin = 0;

  bool has_validation() const { return val_begin < val.size(); }
};

// Opens `path` (and `val_path` when not empty) in `format`. Without val_path, the last
// ⌊size · val_fraction⌋ tokens of `path` are validation (at least one when val_fraction > 0,
// else an error); with it, all of `path` is training, all of `val_path` validation, and
// val_fraction is not used. val_fraction must be in [0, 1) either way.
Corpus load_corpus(DataFormat format, const std::string& path, const std::string& val_path,
                   double val_fraction);
// A text file as bytes: load_corpus(DataFormat::text, path, "", val_fraction).
Corpus load_text(const std::string& path, double val_fraction);

// Text: vocab_size must be 256. Token formats: vocab_size must exceed every token id of both
// sources; the error names the file, the token offset and the id.
void check_vocabulary(const Corpus& corpus, DataFormat format, int64_t vocab_size);

// The window starts of a split, [begin, end − seq_len) in one segment, or with documents one
// segment per document (clipped to the split) that holds at least seq_len + 1 tokens: the u-th
// start counts through the segments in order.
struct WindowStarts {
  std::vector<int64_t> first;       // the first start of each segment
  std::vector<int64_t> cumulative;  // starts in segments 0..i
  int64_t total() const { return cumulative.empty() ? 0 : cumulative.back(); }
  int64_t at(int64_t u) const;      // u in [0, total())
};

// Errors (naming the source and `split_name`) when [begin, end) is not inside the source, or
// holds no window of seq_len + 1 tokens (within_documents: inside no document; an error too when
// the source has no documents).
WindowStarts window_starts(const TokenSource& source, int64_t begin, int64_t end,
                           int64_t seq_len, const char* split_name, bool within_documents);

struct Batch {
  Tensor inputs;   // (B·S) i32: tokens w[0..S) of each window, window after window
  Tensor targets;  // (B·S) i32: tokens w[1..S]

  // The batch on `device` (itself when it is there already).
  Batch to(Device device) const {
    if (inputs.device() == device) return *this;
    return {inputs.to(device), targets.to(device)};
  }
};

// Windows of S + 1 tokens starting uniformly over the split's window starts (without documents
// [begin, end − S − 1]): one Rng::below(total starts) draw per window, windows in batch order.
// Keeps a pointer to `source`, which must outlive it.
class WindowSampler {
 public:
  // Errors as window_starts.
  WindowSampler(const TokenSource& source, int64_t begin, int64_t end, int64_t seq_len,
                uint64_t seed, const char* split_name, bool within_documents = false);

  Batch next(int64_t batch_size);
  // Advances past the windows next(batch_size) would return, without reading them (another
  // data-parallel rank's micro-batch).
  void skip(int64_t batch_size);

  // The whole sampler state, for checkpoints: resuming from it replays the same windows.
  std::array<uint64_t, 4> state() const { return rng_.state(); }
  void set_state(const std::array<uint64_t, 4>& s) { rng_.set_state(s); }

 private:
  const TokenSource* source_;
  int64_t seq_len_;
  WindowStarts starts_;
  Rng rng_;
};

// The same n_batches · batch_size windows at every call, spread evenly over the split's window
// starts: a validation loss that is comparable from one evaluation to the next. With span
// window starts (without documents end − begin − seq_len) and total = n_batches · batch_size
// windows, window j takes start number ⌊j · span / total⌋; batch batch_index holds windows
// [batch_index · batch_size, (batch_index + 1) · batch_size). batch_index < n_batches.
// `split_name` only labels errors.
Batch fixed_batch(const TokenSource& source, int64_t begin, int64_t end, int64_t seq_len,
                  int64_t batch_size, int64_t batch_index, int64_t n_batches,
                  const char* split_name = "validation", bool within_documents = false);

}  // namespace remoe::train
