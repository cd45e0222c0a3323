// Token sources: training data as one flat sequence of token ids, whatever its format on disk.
// Files are memory-mapped (POSIX mmap), never read whole; every header, count and offset is
// validated at open, and every token is scanned once (ids must fit int32 and be non-negative;
// the largest id is kept for the vocabulary check). Errors name the file, the byte or token
// offset and what was expected. All integers are little-endian.
//
// data.format = "text": the file's bytes are the tokens (vocabulary 256).
//
// data.format = "llmc": llm.c token shards (karpathy/llm.c, dev/data/data_common.py
// write_datafile and llmc/dataloader.h). A header of 256 int32:
//   header[0] magic    20240520: uint16 tokens;  20240801: uint32 tokens
//   header[1] version  1 for 20240520; for 20240801 both 7 (what llm.c's write_datafile writes
//                      for llama-3) and 1 are accepted
//   header[2] n        the number of tokens after the header (≥ 0)
// then n tokens; the file is exactly 1024 + n · token_size bytes. data.path may be a glob
// ("data/fineweb_train_*.bin"), expanded in sorted (byte) order; the shards are concatenated
// (a window may straddle two shards, as it would in one big file) and may mix uint16/uint32.
//
// data.format = "megatron": a Megatron-LM indexed dataset (megatron/core/datasets/
// indexed_dataset.py, _IndexWriter / _IndexReader): data.path is the prefix, or prefix.bin or
// prefix.idx. prefix.idx:
//   byte 0    9 bytes   magic "MMIDIDX\x00\x00"
//   byte 9    u64       version, 1
//   byte 17   u8        dtype of the tokens in .bin: 1 uint8, 2 int8, 3 int16, 4 int32,
//                       5 int64, 6 float64, 7 float32, 8 uint16 (the float codes are refused)
//   byte 18   u64       S, the number of sequences
//   byte 26   u64       D, the number of document indices
//   byte 34   int32[S]  sequence lengths, in tokens
//   then      int64[S]  sequence pointers: byte offsets of the sequences in .bin
//   then      int64[D]  document indices: document d is sequences [idx[d], idx[d+1]); the
//                       first is 0, they never decrease, the last is S (D − 1 documents)
//   then      int8[S]   sequence modes, in multimodal datasets only (accepted and ignored)
// and nothing after. prefix.bin holds the tokens. Megatron's writer stores the sequences back
// to back, and so this reader requires it: pointer[0] = 0, pointer[i + 1] = pointer[i] +
// lengths[i] · dtype size, and .bin is exactly Σ lengths · dtype size bytes. The tokens are
// then .bin read as one array, and documents start at the token offsets pointer[idx[d]] / size.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace remoe::train {

enum class DataFormat { text, llmc, megatron };  // data.format

// How token ids are stored on disk.
enum class TokenType { u8, i8, i16, u16, i32, i64, u32 };

class MappedFile;

class TokenSource {
 public:
  // The path, glob pattern or prefix it was opened from.
  const std::string& name() const { return name_; }
  int64_t size() const { return size_; }  // tokens

  // Tokens [offset, offset + n) as int32 into `out`; an error outside [0, size()).
  void read(int64_t offset, int64_t n, int32_t* out) const;

  // The largest token id (−1 when empty) and the offset of its first occurrence.
  int64_t max_token() const { return max_token_; }
  int64_t max_token_offset() const { return max_token_offset_; }

  // Where token `offset` lives, for messages: "'shard.bin' token 17" (the file's own offset).
  std::string where(int64_t offset) const;

  // Token offsets where documents start, ascending and distinct, the first 0; empty when the
  // format has no document boundaries (text, llm.c).
  const std::vector<int64_t>& document_starts() const;

 private:
  struct Piece {  // a run of tokens of one type inside one mapped file
    std::shared_ptr<const MappedFile> file;
    int64_t byte_offset;  // of the first token in the file
    int64_t begin, n;     // token offsets [begin, begin + n) in the source
    TokenType type;
  };
  friend struct SourceBuilder;  // in token_source.cpp: the only way pieces are added

  std::string name_;
  std::vector<Piece> pieces_;
  int64_t size_ = 0;
  int64_t max_token_ = -1, max_token_offset_ = -1;
  // Shared, so that copies of a source (a Corpus's val is often its train) cost nothing.
  std::shared_ptr<const std::vector<int64_t>> document_starts_;
};

// A text file as bytes. Errors: missing, a directory, not a regular file, unreadable, empty,
// or ".xz" (with the command that decompresses it).
TokenSource open_text(const std::string& path);
// One llm.c shard (no glob expansion); may hold 0 tokens.
TokenSource open_llmc_shard(const std::string& path);
// `pattern` is a path, or a glob when it has any of * ? [; an error when nothing matches it or
// the shards hold no token at all.
TokenSource open_llmc(const std::string& pattern);
// A prefix, prefix.bin or prefix.idx; an error when the dataset holds no token.
TokenSource open_megatron(const std::string& path);
// Dispatches on the format.
TokenSource open_tokens(DataFormat format, const std::string& path);

}  // namespace remoe::train
