#include "train/data.h"

#include <algorithm>
#include <cmath>

#include "kernels/check.h"

namespace remoe::train {
namespace {

// The window of S + 1 tokens at `start` as inputs [start, start + S) and targets shifted by one.
void copy_window(const TokenSource& source, int64_t start, int64_t seq_len, int32_t* inputs,
                 int32_t* targets) {
  source.read(start, seq_len, inputs);
  source.read(start + 1, seq_len, targets);
}

Batch make_batch(int64_t batch_size, int64_t seq_len) {
  return {Tensor::empty({batch_size * seq_len}, DType::i32),
          Tensor::empty({batch_size * seq_len}, DType::i32)};
}

}  // namespace

Corpus load_corpus(DataFormat format, const std::string& path, const std::string& val_path,
                   double val_fraction) {
  REMOE_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "data: '", path,
              "': val_fraction must be in [0, 1), got ", val_fraction);
  Corpus corpus;
  corpus.train = open_tokens(format, path);
  const int64_t size = corpus.train.size();
  if (!val_path.empty()) {
    corpus.train_end = size;
    corpus.val = open_tokens(format, val_path);
    return corpus;
  }
  const auto n_val = int64_t(std::floor(double(size) * val_fraction));
  REMOE_CHECK(val_fraction == 0.0 || n_val > 0, "data: '", path, "': val_fraction ",
              val_fraction, " of ", size, " tokens leaves an empty validation split (", n_val,
              " tokens); use more data or a larger val_fraction");
  corpus.train_end = size - n_val;
  corpus.val = corpus.train;  // shares the mapping
  corpus.val_begin = corpus.train_end;
  return corpus;
}

Corpus load_text(const std::string& path, double val_fraction) {
  return load_corpus(DataFormat::text, path, "", val_fraction);
}

void check_vocabulary(const Corpus& corpus, DataFormat format, int64_t vocab_size) {
  if (format == DataFormat::text) {
    REMOE_CHECK(vocab_size == 256, "model.vocab_size = ", vocab_size, ", but ",
                corpus.train.name(), " is read as bytes: the vocabulary is 256");
    return;
  }
  for (const TokenSource* s : {&corpus.train, &corpus.val}) {
    REMOE_CHECK(s->max_token() < vocab_size, "model.vocab_size = ", vocab_size, ", but ",
                s->where(s->max_token_offset()), " is token id ", s->max_token(),
                ": the vocabulary must exceed the largest token id (model.vocab_size >= ",
                s->max_token() + 1, ")");
  }
}

int64_t WindowStarts::at(int64_t u) const {
  const size_t i = size_t(std::upper_bound(cumulative.begin(), cumulative.end(), u) -
                          cumulative.begin());
  return first[i] + u - (i > 0 ? cumulative[i - 1] : 0);
}

WindowStarts window_starts(const TokenSource& source, int64_t begin, int64_t end,
                           int64_t seq_len, const char* split_name, bool within_documents) {
  const std::string& name = source.name();
  const char* split = split_name ? split_name : "(unnamed)";
  const int64_t size = source.size();
  REMOE_CHECK(seq_len >= 1, "data: '", name, "' ", split,
              " split: seq_len must be at least 1, got ", seq_len);
  REMOE_CHECK(0 <= begin && begin <= end && end <= size, "data: '", name, "' ", split, " split [",
              begin, ", ", end, ") is not a token range inside the ", size, "-token source");
  WindowStarts w;
  if (!within_documents) {
    REMOE_CHECK(end - begin >= seq_len + 1, "data: '", name, "' ", split, " split has ",
                end - begin, " tokens but seq_len ", seq_len, " needs windows of ", seq_len + 1,
                " tokens: a sequence longer than the data (use a shorter seq_len or more data)");
    w.first = {begin};
    w.cumulative = {end - begin - seq_len};
    return w;
  }

  const std::vector<int64_t>& starts = source.document_starts();
  REMOE_CHECK(!starts.empty(), "data: '", name,
              "' has no document boundaries (only the megatron format has them): ",
              "data.within_documents needs data.format = \"megatron\"");
  // From the document holding `begin` (starts[0] = 0 ≤ begin) to the last one starting before end.
  int64_t longest = 0;
  for (auto it = std::upper_bound(starts.begin(), starts.end(), begin) - 1;
       it != starts.end() && *it < end; ++it) {
    const int64_t lo = std::max(*it, begin);
    const int64_t hi = std::min(it + 1 != starts.end() ? *(it + 1) : size, end);
    longest = std::max(longest, hi - lo);
    if (hi - lo >= seq_len + 1) {
      w.first.push_back(lo);
      w.cumulative.push_back(w.total() + hi - lo - seq_len);
    }
  }
  REMOE_CHECK(!w.first.empty(), "data: '", name, "' ", split, " split [", begin, ", ", end,
              "): with data.within_documents no document holds a window of seq_len + 1 = ",
              seq_len + 1, " tokens (the longest has ", longest,
              "): a sequence longer than the documents (use a shorter seq_len or turn ",
              "data.within_documents off)");
  return w;
}

WindowSampler::WindowSampler(const TokenSource& source, int64_t begin, int64_t end,
                             int64_t seq_len, uint64_t seed, const char* split_name,
                             bool within_documents)
    : source_(&source),
      seq_len_(seq_len),
      starts_(window_starts(source, begin, end, seq_len, split_name, within_documents)),
      rng_(seed) {}

Batch WindowSampler::next(int64_t batch_size) {
  REMOE_CHECK(batch_size >= 1, "data: '", source_->name(),
              "': batch_size must be at least 1, got ", batch_size);
  Batch batch = make_batch(batch_size, seq_len_);
  int32_t* inputs = batch.inputs.data<int32_t>();
  int32_t* targets = batch.targets.data<int32_t>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t start = starts_.at(rng_.below(starts_.total()));
    copy_window(*source_, start, seq_len_, inputs + b * seq_len_, targets + b * seq_len_);
  }
  return batch;
}

void WindowSampler::skip(int64_t batch_size) {
  for (int64_t b = 0; b < batch_size; ++b) (void)rng_.below(starts_.total());
}

Batch fixed_batch(const TokenSource& source, int64_t begin, int64_t end, int64_t seq_len,
                  int64_t batch_size, int64_t batch_index, int64_t n_batches,
                  const char* split_name, bool within_documents) {
  const WindowStarts starts =
      window_starts(source, begin, end, seq_len, split_name, within_documents);
  const std::string& name = source.name();
  REMOE_CHECK(batch_size >= 1 && n_batches >= 1, "data: '", name,
              "': fixed batches need batch_size and n_batches of at least 1, got ", batch_size,
              " and ", n_batches);
  // Bounds n_batches · batch_size so that j · r below stays far from overflow.
  REMOE_CHECK(n_batches <= (int64_t{1} << 31) / batch_size, "data: '", name, "': ", n_batches,
              " fixed batches of ", batch_size, " windows are more than 2^31 windows");
  REMOE_CHECK(0 <= batch_index && batch_index < n_batches, "data: '", name,
              "': fixed batch index ", batch_index, " is out of range [0, ", n_batches, ")");

  const int64_t span = starts.total();
  const int64_t total = n_batches * batch_size;
  // j · span / total without overflowing j · span: split span into quotient and remainder.
  const int64_t q = span / total, r = span % total;
  Batch batch = make_batch(batch_size, seq_len);
  int32_t* inputs = batch.inputs.data<int32_t>();
  int32_t* targets = batch.targets.data<int32_t>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t j = batch_index * batch_size + b;
    const int64_t start = starts.at(j * q + j * r / total);
    copy_window(source, start, seq_len, inputs + b * seq_len, targets + b * seq_len);
  }
  return batch;
}

}  // namespace remoe::train
