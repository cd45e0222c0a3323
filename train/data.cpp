#include "train/data.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <system_error>

namespace remoe::train {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  REMOE_CHECK(!ec || ec == std::errc::no_such_file_or_directory,
              "data: cannot inspect '", path, "': ", ec.message());
  REMOE_CHECK(fs::exists(st), "data: no such file '", path, "'");
  REMOE_CHECK(!fs::is_directory(st), "data: '", path, "' is a directory, expected a text file");
  // A FIFO or device would block or never end; a corpus is a plain file.
  REMOE_CHECK(fs::is_regular_file(st), "data: '", path, "' is not a regular file");

  std::ifstream in(path, std::ios::binary);
  REMOE_CHECK(in.is_open(), "data: cannot read '", path, "' (cannot open it: permissions?)");
  std::vector<uint8_t> bytes;
  char chunk[1 << 16];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    bytes.insert(bytes.end(), reinterpret_cast<const uint8_t*>(chunk),
                 reinterpret_cast<const uint8_t*>(chunk) + in.gcount());
    if (!in) break;
  }
  REMOE_CHECK(!in.bad(), "data: cannot read '", path, "': a read error after ", bytes.size(),
              " bytes");
  return bytes;
}

// The window of S + 1 bytes at `start` as inputs [start, start + S) and targets shifted by one.
void copy_window(const std::vector<uint8_t>& bytes, int64_t start, int64_t seq_len,
                 int32_t* inputs, int32_t* targets) {
  const uint8_t* w = bytes.data() + start;
  for (int64_t t = 0; t < seq_len; ++t) {
    inputs[t] = int32_t(w[t]);
    targets[t] = int32_t(w[t + 1]);
  }
}

// Shared by the sampler and fixed_batch: the split [begin, end) must lie in the corpus and hold
// at least one window of seq_len + 1 bytes.
void check_split(const TextCorpus& corpus, int64_t begin, int64_t end, int64_t seq_len,
                 const char* split_name) {
  const int64_t size = int64_t(corpus.bytes.size());
  REMOE_CHECK(seq_len >= 1, "data: '", corpus.path, "' ", split_name,
              " split: seq_len must be at least 1, got ", seq_len);
  REMOE_CHECK(0 <= begin && begin <= end && end <= size, "data: '", corpus.path, "' ",
              split_name, " split [", begin, ", ", end, ") is not a byte range inside the ",
              size, "-byte corpus");
  REMOE_CHECK(end - begin >= seq_len + 1, "data: '", corpus.path, "' ", split_name, " split has ",
              end - begin, " bytes but seq_len ", seq_len, " needs windows of ", seq_len + 1,
              " bytes: a sequence longer than the data (use a shorter seq_len or more text)");
}

Batch make_batch(int64_t batch_size, int64_t seq_len) {
  return {Tensor::empty({batch_size * seq_len}, DType::i32),
          Tensor::empty({batch_size * seq_len}, DType::i32)};
}

}  // namespace

TextCorpus load_text(const std::string& path, double val_fraction) {
  REMOE_CHECK(!path.ends_with(".xz"), "data: '", path,
              "' is xz-compressed; compressed corpora are not read yet: decompress it with `xz -dk ",
              path, "` and use '", path.substr(0, path.size() - 3), "'");
  REMOE_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "data: '", path,
              "': val_fraction must be in [0, 1), got ", val_fraction);

  TextCorpus corpus;
  corpus.path = path;
  corpus.bytes = read_bytes(path);
  const int64_t size = int64_t(corpus.bytes.size());
  REMOE_CHECK(size > 0, "data: '", path, "' is empty (0 bytes)");

  const auto n_val = int64_t(std::floor(double(size) * val_fraction));
  REMOE_CHECK(val_fraction == 0.0 || n_val > 0, "data: '", path, "': val_fraction ",
              val_fraction, " of ", size, " bytes leaves an empty validation split (",
              n_val, " bytes); use more text or a larger val_fraction");
  corpus.train_end = size - n_val;
  return corpus;
}

WindowSampler::WindowSampler(const TextCorpus& corpus, int64_t begin, int64_t end,
                             int64_t seq_len, uint64_t seed, const char* split_name)
    : corpus_(&corpus), begin_(begin), end_(end), seq_len_(seq_len), rng_(seed) {
  check_split(corpus, begin, end, seq_len, split_name ? split_name : "(unnamed)");
}

Batch WindowSampler::next(int64_t batch_size) {
  REMOE_CHECK(batch_size >= 1, "data: '", corpus_->path, "': batch_size must be at least 1, got ",
              batch_size);
  Batch batch = make_batch(batch_size, seq_len_);
  int32_t* inputs = batch.inputs.data<int32_t>();
  int32_t* targets = batch.targets.data<int32_t>();
  const int64_t n_starts = end_ - begin_ - seq_len_;
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t start = begin_ + rng_.below(n_starts);
    copy_window(corpus_->bytes, start, seq_len_, inputs + b * seq_len_, targets + b * seq_len_);
  }
  return batch;
}

Batch fixed_batch(const TextCorpus& corpus, int64_t begin, int64_t end, int64_t seq_len,
                  int64_t batch_size, int64_t batch_index, int64_t n_batches,
                  const char* split_name) {
  check_split(corpus, begin, end, seq_len, split_name ? split_name : "(unnamed)");
  REMOE_CHECK(batch_size >= 1 && n_batches >= 1, "data: '", corpus.path,
              "': fixed batches need batch_size and n_batches of at least 1, got ", batch_size,
              " and ", n_batches);
  // Bounds n_batches · batch_size so that j · r below stays far from overflow.
  REMOE_CHECK(n_batches <= (int64_t{1} << 31) / batch_size, "data: '", corpus.path,
              "': ", n_batches, " fixed batches of ", batch_size,
              " windows are more than 2^31 windows");
  REMOE_CHECK(0 <= batch_index && batch_index < n_batches, "data: '", corpus.path,
              "': fixed batch index ", batch_index, " is out of range [0, ", n_batches, ")");

  const int64_t span = end - begin - seq_len;  // the number of window starts
  const int64_t total = n_batches * batch_size;
  // j · span / total without overflowing j · span: split span into quotient and remainder.
  const int64_t q = span / total, r = span % total;
  Batch batch = make_batch(batch_size, seq_len);
  int32_t* inputs = batch.inputs.data<int32_t>();
  int32_t* targets = batch.targets.data<int32_t>();
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t j = batch_index * batch_size + b;
    const int64_t start = begin + j * q + j * r / total;
    copy_window(corpus.bytes, start, seq_len, inputs + b * seq_len, targets + b * seq_len);
  }
  return batch;
}

}  // namespace remoe::train
