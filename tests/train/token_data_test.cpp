// Token sources (train/token_source.h) on hand-built files: llm.c shards (uint16, uint32,
// globs), Megatron indexed datasets (several dtypes, documents), every malformed header, count
// and offset; windows that stay inside documents; the vocabulary check; the data.* config keys;
// and scripts/text_to_shards.py read back.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "tests/temp_dir.h"
#include "tests/test_util.h"
#include "train/config.h"
#include "train/data.h"
#include "train/token_source.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;
using remoe::test::error_of;
using Bytes = std::vector<uint8_t>;
using test::TempDir;

// Little-endian values appended to / written into a byte buffer.
template <typename T>
void put(Bytes& b, T v) {
  const size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}
template <typename T>
void poke(Bytes& b, size_t at, T v) {
  ASSERT_LE(at + sizeof(T), b.size());
  std::memcpy(b.data() + at, &v, sizeof(T));
}

// An llm.c shard: header (magic, version, count, zeros) and the tokens at `token_size` bytes.
Bytes llmc_shard(const std::vector<int64_t>& tokens, int32_t magic = 20240520,
                 int32_t version = 1) {
  Bytes b;
  put<int32_t>(b, magic);
  put<int32_t>(b, version);
  put<int32_t>(b, int32_t(tokens.size()));
  b.resize(1024, 0);
  for (int64_t t : tokens) {
    if (magic == 20240801)
      put<uint32_t>(b, uint32_t(t));
    else
      put<uint16_t>(b, uint16_t(t));
  }
  return b;
}

// A Megatron dataset: one sequence per inner vector, documents as runs of sequences
// (doc_sizes[d] sequences each; default one per document), tokens stored as dtype `code`.
struct Megatron {
  Bytes idx, bin;
  int64_t n_seq = 0, n_doc_idx = 0;
  // Byte offsets in .idx of each array.
  size_t lengths_at() const { return 34; }
  size_t pointers_at() const { return 34 + 4 * size_t(n_seq); }
  size_t docs_at() const { return 34 + 12 * size_t(n_seq); }
};

int64_t dtype_size(uint8_t code) {
  switch (code) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: case 7: return 4;
    default: return 8;
  }
}

Megatron megatron(const std::vector<std::vector<int64_t>>& sequences, uint8_t code = 8,
                  std::vector<int64_t> doc_sizes = {}) {
  if (doc_sizes.empty()) doc_sizes.assign(sequences.size(), 1);
  Megatron m;
  m.n_seq = int64_t(sequences.size());
  m.n_doc_idx = int64_t(doc_sizes.size()) + 1;
  const int64_t size = dtype_size(code);
  for (const auto& s : sequences)
    for (int64_t t : s) {
      switch (size) {
        case 1: put<uint8_t>(m.bin, uint8_t(t)); break;
        case 2: put<uint16_t>(m.bin, uint16_t(t)); break;
        case 4: put<int32_t>(m.bin, int32_t(t)); break;
        default: put<int64_t>(m.bin, t); break;
      }
    }
  m.idx.insert(m.idx.end(), {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0});
  put<uint64_t>(m.idx, 1);
  put<uint8_t>(m.idx, code);
  put<uint64_t>(m.idx, uint64_t(m.n_seq));
  put<uint64_t>(m.idx, uint64_t(m.n_doc_idx));
  for (const auto& s : sequences) put<int32_t>(m.idx, int32_t(s.size()));
  int64_t pointer = 0;
  for (const auto& s : sequences) {
    put<int64_t>(m.idx, pointer);
    pointer += int64_t(s.size()) * size;
  }
  int64_t seq = 0;
  put<int64_t>(m.idx, 0);
  for (int64_t n : doc_sizes) put<int64_t>(m.idx, seq += n);
  return m;
}

std::string write_megatron(const TempDir& dir, const std::string& name, const Megatron& m) {
  dir.write(name + ".idx", m.idx);
  dir.write(name + ".bin", m.bin);
  return dir.file(name);
}

std::vector<int32_t> all_tokens(const TokenSource& s) {
  std::vector<int32_t> v(size_t(s.size()));
  s.read(0, s.size(), v.data());
  return v;
}

std::vector<int32_t> as_i32(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

void expect_mentions(const std::string& message, std::initializer_list<std::string> parts) {
  EXPECT_FALSE(message.empty());
  for (const auto& part : parts)
    EXPECT_NE(message.find(part), std::string::npos)
        << "message lacks \"" << part << "\":\n  " << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line: " << message;
}

// ---- llm.c shards ---------------------------------------------------------------------------

TEST(Llmc, Uint16RoundTrip) {
  TempDir dir;
  const std::vector<int64_t> tokens = {0, 1, 65535, 300, 50256, 7, 65535};
  const auto path = dir.write("s.bin", llmc_shard(tokens));
  const TokenSource s = open_llmc_shard(path);
  EXPECT_EQ(s.name(), path);
  EXPECT_EQ(s.size(), 7);
  EXPECT_EQ(all_tokens(s), as_i32(tokens));
  EXPECT_EQ(s.max_token(), 65535);
  EXPECT_EQ(s.max_token_offset(), 2);  // the first occurrence
  EXPECT_EQ(s.where(3), "'" + path + "' token 3 (byte offset 1030)");
  EXPECT_TRUE(s.document_starts().empty());
  std::vector<int32_t> mid(3);
  s.read(2, 3, mid.data());
  EXPECT_EQ(mid, std::vector<int32_t>({65535, 300, 50256}));
  EXPECT_EQ(all_tokens(open_llmc(path)), as_i32(tokens));  // no glob characters: the file itself
  expect_mentions(error_of([&] { s.read(5, 3, mid.data()); }), {path, "[5, 8)", "7 tokens"});
}

TEST(Llmc, Uint32RoundTripBothVersions) {
  TempDir dir;
  const std::vector<int64_t> tokens = {128255, 0, 65536, 2147483647, 3};
  for (int32_t version : {7, 1}) {
    const auto path = dir.write("l.bin", llmc_shard(tokens, 20240801, version));
    EXPECT_EQ(fs::file_size(path), 1024u + 4 * tokens.size());
    const TokenSource s = open_llmc_shard(path);
    EXPECT_EQ(all_tokens(s), as_i32(tokens));
    EXPECT_EQ(s.max_token(), 2147483647);
    EXPECT_EQ(s.max_token_offset(), 3);
  }
  // An empty shard is valid on its own; a source of nothing but empty shards is not.
  const auto empty = dir.write("e.bin", llmc_shard({}));
  EXPECT_EQ(open_llmc_shard(empty).size(), 0);
  expect_mentions(error_of([&] { open_llmc(dir.file("e*.bin")); }),
                  {dir.file("e*.bin"), "holds no tokens", "1 llm.c shard "});
}

TEST(Llmc, GlobExpandsInSortedOrderAndConcatenates) {
  TempDir dir;
  // Written out of order, one of them uint32: the source is shard 0, 1, 2 back to back.
  dir.write("d_train_000002.bin", llmc_shard({20, 21}));
  dir.write("d_train_000000.bin", llmc_shard({0, 1, 2}));
  dir.write("d_train_000001.bin", llmc_shard({10, 70000, 12, 13}, 20240801, 7));
  dir.write("d_val_000000.bin", llmc_shard({99}));  // not matched
  const std::string pattern = dir.file("d_train_*.bin");
  const TokenSource s = open_llmc(pattern);
  EXPECT_EQ(s.name(), pattern);
  EXPECT_EQ(all_tokens(s), std::vector<int32_t>({0, 1, 2, 10, 70000, 12, 13, 20, 21}));
  EXPECT_EQ(s.max_token(), 70000);
  EXPECT_EQ(s.max_token_offset(), 4);
  EXPECT_EQ(s.where(4), "'" + dir.file("d_train_000001.bin") + "' token 1 (byte offset 1028)");
  EXPECT_EQ(s.where(8), "'" + dir.file("d_train_000002.bin") + "' token 1 (byte offset 1026)");
  // A read across both shard boundaries.
  std::vector<int32_t> w(6);
  s.read(2, 6, w.data());
  EXPECT_EQ(w, std::vector<int32_t>({2, 10, 70000, 12, 13, 20}));
  // Windows drawn from the concatenation are contiguous slices of it.
  WindowSampler sampler(s, 0, s.size(), 3, 5, "train");
  const auto expected = all_tokens(s);
  for (int i = 0; i < 20; ++i) {
    const auto in = sampler.next(1).inputs.to_vector<int32_t>();
    const auto it = std::search(expected.begin(), expected.end(), in.begin(), in.end());
    EXPECT_NE(it, expected.end());
  }

  const std::string none = dir.file("nothing_*.bin");
  expect_mentions(error_of([&] { open_llmc(none); }), {"no file matches", none});
  const std::string missing = dir.file("missing.bin");
  expect_mentions(error_of([&] { open_llmc(missing); }), {"no such file", missing});
  fs::create_directories(dir.file("d_train_dir.bin"));
  expect_mentions(error_of([&] { open_llmc(pattern); }),
                  {dir.file("d_train_dir.bin"), "is a directory", "llm.c token shard"});
}

TEST(Llmc, MalformedFilesNameTheFileAndTheOffset) {
  TempDir dir;
  const Bytes good = llmc_shard({1, 2, 3, 4});

  const auto truncated = dir.write("t.bin", Bytes(good.begin(), good.begin() + 100));
  expect_mentions(error_of([&] { open_llmc_shard(truncated); }),
                  {truncated, "100 bytes", "1024-byte header"});
  const auto empty_file = dir.write("z.bin", {});
  expect_mentions(error_of([&] { open_llmc_shard(empty_file); }), {empty_file, "0 bytes"});

  Bytes b = good;
  poke<int32_t>(b, 0, 12345);
  const auto magic = dir.write("m.bin", b);
  expect_mentions(error_of([&] { open_llmc_shard(magic); }),
                  {magic, "magic (byte offset 0) is 12345", "20240520", "20240801"});

  b = good;
  poke<int32_t>(b, 4, 2);
  const auto version = dir.write("v.bin", b);
  expect_mentions(error_of([&] { open_llmc_shard(version); }),
                  {version, "version (byte offset 4) is 2", "expected 1 for magic 20240520"});
  b = llmc_shard({1}, 20240801, 3);
  const auto version32 = dir.write("v32.bin", b);
  expect_mentions(error_of([&] { open_llmc_shard(version32); }),
                  {version32, "version (byte offset 4) is 3", "expected 7 (or 1)", "20240801"});

  b = good;
  poke<int32_t>(b, 8, -4);
  const auto negative = dir.write("n.bin", b);
  expect_mentions(error_of([&] { open_llmc_shard(negative); }),
                  {negative, "token count (byte offset 8) is -4", ">= 0"});

  b = good;
  b.pop_back();  // half a token short
  const auto short_file = dir.write("short.bin", b);
  expect_mentions(error_of([&] { open_llmc_shard(short_file); }),
                  {short_file, "1031 bytes", "counts 4 uint16 tokens", "byte offset 8",
                   "1024 + 4 * 2 = 1032 bytes", "truncated"});
  b = good;
  put<uint16_t>(b, 5);
  put<uint16_t>(b, 6);
  const auto long_file = dir.write("long.bin", b);
  expect_mentions(error_of([&] { open_llmc_shard(long_file); }),
                  {long_file, "1036 bytes", "= 1032 bytes", "4 bytes after the last token"});

  // A Megatron index given as a shard: the hint names the right format.
  const Megatron m = megatron({{1, 2}});
  Bytes idx = m.idx;
  idx.resize(1024 + 2 * 4, 0);
  const auto mmidx = dir.write("x.idx", idx);
  expect_mentions(error_of([&] { open_llmc_shard(mmidx); }),
                  {mmidx, "magic", "data.format = \"megatron\""});

  Bytes text(2000, 'a');
  text[10] = '\n';
  const auto txt = dir.write("x.txt", text);
  expect_mentions(error_of([&] { open_llmc_shard(txt); }),
                  {txt, "magic", "begins like text", "data.format = \"text\""});

  // uint32 ids that do not fit int32.
  const auto huge = dir.write("h.bin", llmc_shard({5, 2147483648LL, 7}, 20240801, 7));
  expect_mentions(error_of([&] { open_llmc_shard(huge); }),
                  {huge, "token 1 (byte offset 1028) is 2147483648", "[0, 2^31)"});
}

// ---- Megatron -------------------------------------------------------------------------------

TEST(Megatron, RoundTripEveryIntegerDtypeAndEveryPathForm) {
  TempDir dir;
  // Three documents: {3 tokens}, {2 + 1 tokens in two sequences}, {4 tokens}.
  const std::vector<std::vector<int64_t>> seqs = {{1, 2, 3}, {4, 5}, {6}, {7, 8, 9, 120}};
  const std::vector<int32_t> flat = {1, 2, 3, 4, 5, 6, 7, 8, 9, 120};
  for (uint8_t code : {1, 2, 3, 4, 5, 8}) {
    const Megatron m = megatron(seqs, code, {1, 2, 1});
    const auto prefix = write_megatron(dir, "ds" + std::to_string(code), m);
    EXPECT_EQ(int64_t(m.bin.size()), 10 * dtype_size(code));
    for (const std::string& path : {prefix, prefix + ".bin", prefix + ".idx"}) {
      const TokenSource s = open_megatron(path);
      EXPECT_EQ(s.name(), path);
      EXPECT_EQ(all_tokens(s), flat) << "dtype code " << int(code);
      EXPECT_EQ(s.document_starts(), std::vector<int64_t>({0, 3, 6})) << "dtype code " << int(code);
      EXPECT_EQ(s.max_token(), 120);
      EXPECT_EQ(s.max_token_offset(), 9);
    }
    EXPECT_EQ(open_megatron(prefix).where(4), "'" + prefix + ".bin' token 4 (byte offset " +
                                                  std::to_string(4 * dtype_size(code)) + ")");
  }
  // Multimodal datasets carry one mode byte per sequence after the document indices.
  Megatron m = megatron(seqs, 8, {1, 2, 1});
  for (int i = 0; i < 4; ++i) put<int8_t>(m.idx, 0);
  EXPECT_EQ(all_tokens(open_megatron(write_megatron(dir, "modes", m))), flat);
  // Empty documents (repeated indices) add no boundary.
  const Megatron e = megatron({{1, 2}, {3}}, 8, {0, 1, 0, 1, 0});
  EXPECT_EQ(open_megatron(write_megatron(dir, "empties", e)).document_starts(),
            std::vector<int64_t>({0, 2}));
}

TEST(Megatron, MissingFiles) {
  TempDir dir;
  const Megatron m = megatron({{1, 2, 3}});
  dir.write("only_idx.idx", m.idx);
  expect_mentions(error_of([&] { open_megatron(dir.file("only_idx")); }),
                  {dir.file("only_idx.bin"), "no such file", "prefix.bin"});
  dir.write("only_bin.bin", m.bin);
  expect_mentions(error_of([&] { open_megatron(dir.file("only_bin.bin")); }),
                  {dir.file("only_bin.idx"), "no such file", "prefix.idx"});
}

TEST(Megatron, MalformedIndexNamesTheFileTheOffsetAndTheExpectation) {
  TempDir dir;
  const Megatron good = megatron({{1, 2, 3}, {4, 5}, {6, 7, 8, 9}}, 4);  // int32, 3 sequences
  const std::string idx = dir.file("bad.idx");
  // Writes `m`, opens it and returns the error.
  const auto error_for = [&](const Megatron& m) {
    write_megatron(dir, "bad", m);
    return error_of([&] { open_megatron(dir.file("bad")); });
  };
  Megatron m = good;

  m.idx.resize(20);
  expect_mentions(error_for(m), {idx, "20 bytes", "34-byte Megatron index header"});

  m = good;
  m.idx[0] = 'X';
  expect_mentions(error_for(m), {idx, "byte offset 0", "magic", "MMIDIDX"});

  m = good;
  poke<uint64_t>(m.idx, 9, 2);
  expect_mentions(error_for(m), {idx, "byte offset 9", "version is 2", "expected 1"});

  for (uint8_t code : {6, 7}) {
    m = good;
    m.idx[17] = code;
    expect_mentions(error_for(m), {idx, "byte offset 17", "dtype code " + std::to_string(code),
                                   code == 6 ? "float64" : "float32", "not an integer type"});
  }
  for (uint8_t code : {0, 9, 255}) {
    m = good;
    m.idx[17] = code;
    expect_mentions(error_for(m), {idx, "byte offset 17", "dtype code " + std::to_string(code),
                                   "not a Megatron dtype", "8 uint16"});
  }

  m = good;
  poke<uint64_t>(m.idx, 18, uint64_t(1) << 62);  // a count no file could hold
  expect_mentions(error_for(m),
                  {idx, "too short", "4611686018427387904 sequences", "byte offset 18"});
  m = good;
  poke<uint64_t>(m.idx, 26, 5);  // 5 document indices, the file holds 4
  expect_mentions(error_for(m), {idx, "too short", "5 document indices", "byte offset 26"});
  m = good;
  m.idx.push_back(0);  // one stray byte (neither exact nor exact + S mode bytes)
  expect_mentions(error_for(m), {idx, "103 bytes", "34 + 12 * 3 + 8 * 4 = 102", "or 105"});
  m = good;
  m.idx.resize(101);
  expect_mentions(error_for(m), {idx, "101 bytes", "too short"});

  m = good;
  poke<int32_t>(m.idx, m.lengths_at() + 4, -2);
  expect_mentions(error_for(m), {idx, "byte offset 38", "sequence 1 has length -2", ">= 0"});

  m = good;
  poke<int64_t>(m.idx, m.pointers_at() + 8, 1000);
  expect_mentions(error_for(m), {idx, "byte offset 54", "sequence 1 pointer is 1000",
                                 "past the end of '" + dir.file("bad.bin") + "' (36 bytes)"});
  m = good;
  poke<int64_t>(m.idx, m.pointers_at() + 8, 8);
  expect_mentions(error_for(m), {idx, "byte offset 54", "sequence 1 pointer is 8", "expected 12",
                                 "back to back"});
  m = good;
  poke<int64_t>(m.idx, m.pointers_at(), -4);
  expect_mentions(error_for(m), {idx, "byte offset 46", "sequence 0 pointer is -4"});

  // Lengths against the size of .bin: a sequence running past its end, or bytes left over.
  m = good;
  poke<int32_t>(m.idx, m.lengths_at() + 8, 5);
  expect_mentions(error_for(m), {idx, "byte offset 42", "sequence 2 of 5 int32 tokens at byte 20",
                                 "runs past the end", "(36 bytes)"});
  m = good;
  m.bin.resize(m.bin.size() + 8);
  expect_mentions(error_for(m), {dir.file("bad.bin"), "44 bytes", idx, "add up to 9 int32 tokens",
                                 "36 bytes"});
  m = good;
  m.bin.resize(m.bin.size() - 1);
  expect_mentions(error_for(m), {idx, "runs past the end", "(35 bytes)"});

  // Document indices: 0 first, never decreasing, at most S, S last, at least one.
  const size_t docs = good.docs_at();
  m = good;
  poke<int64_t>(m.idx, docs, 1);
  expect_mentions(error_for(m), {idx, "byte offset 70", "document index 0 is 1", "expected 0"});
  m = good;
  poke<int64_t>(m.idx, docs + 16, 1);  // 0, 1, 1 → 0, 1, 1, 3 is fine; make it decrease:
  poke<int64_t>(m.idx, docs + 8, 2);
  expect_mentions(error_for(m), {idx, "byte offset 86", "document index 2 is 1", "[2, 3]"});
  m = good;
  poke<int64_t>(m.idx, docs + 8, 7);
  expect_mentions(error_for(m), {idx, "byte offset 78", "document index 1 is 7", "[0, 3]"});
  m = good;
  poke<int64_t>(m.idx, docs + 24, 2);
  expect_mentions(error_for(m), {idx, "byte offset 94", "last document index is 2",
                                 "the sequence count 3"});
  m = good;
  poke<uint64_t>(m.idx, 26, 0);
  m.idx.resize(docs);
  expect_mentions(error_for(m), {idx, "byte offset 26", "0 document indices", "at least 1"});

  // Token values: negative ids in a signed dtype.
  m = megatron({{1, -3, 2}}, 3);
  expect_mentions(error_for(m),
                  {dir.file("bad.bin"), "token 1 (byte offset 2) is -3", "[0, 2^31)"});
  m = megatron({}, 8, {});
  expect_mentions(error_for(m), {"'" + dir.file("bad") + "'", "holds no tokens"});
}

// ---- documents ------------------------------------------------------------------------------

// Documents of these lengths, token value = its offset in the source (uint16).
TokenSource documents(const TempDir& dir, const std::vector<int64_t>& lengths) {
  std::vector<std::vector<int64_t>> seqs;
  int64_t next = 0;
  for (int64_t n : lengths) {
    seqs.emplace_back();
    for (int64_t i = 0; i < n; ++i) seqs.back().push_back(next++);
  }
  return open_megatron(write_megatron(dir, "docs", megatron(seqs)));
}

TEST(WithinDocuments, NoWindowCrossesABoundaryAndEveryStartIsReached) {
  TempDir dir;
  // Documents [0,5) [5,25) [25,28) [28,40) [40,49); S = 8 needs 9 tokens: docs 2 and 4 are too
  // short, so the starts are 5..16, 28..31, 40.
  const TokenSource s = documents(dir, {5, 20, 3, 12, 9});
  ASSERT_EQ(s.document_starts(), std::vector<int64_t>({0, 5, 25, 28, 40}));
  const int64_t S = 8;
  std::set<int64_t> expected;
  for (int64_t v = 5; v <= 16; ++v) expected.insert(v);
  for (int64_t v = 28; v <= 31; ++v) expected.insert(v);
  expected.insert(40);

  const WindowStarts w = window_starts(s, 0, s.size(), S, "train", true);
  EXPECT_EQ(w.first, std::vector<int64_t>({5, 28, 40}));
  EXPECT_EQ(w.cumulative, std::vector<int64_t>({12, 16, 17}));
  std::set<int64_t> all;
  for (int64_t u = 0; u < w.total(); ++u) all.insert(w.at(u));
  EXPECT_EQ(all, expected);

  WindowSampler sampler(s, 0, s.size(), S, 11, "train", true);
  std::set<int64_t> seen;
  for (int draw = 0; draw < 100; ++draw) {
    const Batch b = sampler.next(8);
    const auto in = b.inputs.to_vector<int32_t>(), tg = b.targets.to_vector<int32_t>();
    for (int64_t k = 0; k < 8; ++k) {
      const int64_t start = in[size_t(k * S)];
      ASSERT_TRUE(expected.count(start)) << "window at " << start << " crosses a boundary";
      for (int64_t t = 0; t < S; ++t) {  // contiguous: token value = offset
        ASSERT_EQ(in[size_t(k * S + t)], start + t);
        ASSERT_EQ(tg[size_t(k * S + t)], start + t + 1);
      }
      seen.insert(start);
    }
  }
  EXPECT_EQ(seen, expected);  // 800 draws over 17 starts reach them all

  // Replayable like any sampler.
  const auto state = sampler.state();
  const auto a = sampler.next(4).inputs.to_vector<int32_t>();
  sampler.set_state(state);
  EXPECT_EQ(sampler.next(4).inputs.to_vector<int32_t>(), a);

  // Fixed batches too: spread over the same 17 starts, in order.
  std::vector<int64_t> fixed;
  for (int64_t i = 0; i < 17; ++i)
    fixed.push_back(fixed_batch(s, 0, s.size(), S, 1, i, 17, "validation", true)
                        .inputs.to_vector<int32_t>()[0]);
  EXPECT_EQ(fixed, std::vector<int64_t>(expected.begin(), expected.end()));
}

TEST(WithinDocuments, SplitsClipDocumentsAndErrors) {
  TempDir dir;
  const TokenSource s = documents(dir, {5, 20, 3, 12, 9});
  // [10, 45): doc 1 clipped to [10, 25), doc 3 whole, doc 4 clipped to [40, 45) (too short).
  const WindowStarts w = window_starts(s, 10, 45, 8, "validation", true);
  EXPECT_EQ(w.first, std::vector<int64_t>({10, 28}));
  EXPECT_EQ(w.cumulative, std::vector<int64_t>({7, 11}));
  // Without documents the same split is one segment.
  const WindowStarts flat = window_starts(s, 10, 45, 8, "validation", false);
  EXPECT_EQ(flat.first, std::vector<int64_t>({10}));
  EXPECT_EQ(flat.cumulative, std::vector<int64_t>({27}));

  expect_mentions(error_of([&] { WindowSampler(s, 0, s.size(), 20, 1, "train", true); }),
                  {s.name(), "train", "no document holds a window of seq_len + 1 = 21 tokens",
                   "the longest has 20", "data.within_documents"});
  expect_mentions(error_of([&] { fixed_batch(s, 40, 49, 9, 1, 0, 1, "validation", true); }),
                  {s.name(), "validation", "[40, 49)", "the longest has 9"});

  const auto shard = dir.write("s.bin", llmc_shard({1, 2, 3, 4, 5, 6}));
  const TokenSource llmc = open_llmc(shard);
  expect_mentions(error_of([&] { WindowSampler(llmc, 0, 6, 2, 1, "train", true); }),
                  {shard, "no document boundaries", "megatron"});
}

// ---- corpus, vocabulary, config -------------------------------------------------------------

TEST(Corpus, ValPathIsAWholeSeparateSource) {
  TempDir dir;
  dir.write("c_train_000000.bin", llmc_shard({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  dir.write("c_val_000000.bin", llmc_shard({300, 301, 302, 303}));
  const Corpus c = load_corpus(DataFormat::llmc, dir.file("c_train_*.bin"),
                               dir.file("c_val_*.bin"), 0.5);  // val_fraction unused
  EXPECT_EQ(c.train_end, 10);
  EXPECT_EQ(c.val_begin, 0);
  EXPECT_EQ(all_tokens(c.val), std::vector<int32_t>({300, 301, 302, 303}));
  EXPECT_TRUE(c.has_validation());
  const Batch v = fixed_batch(c.val, c.val_begin, c.val.size(), 3, 1, 0, 1);
  EXPECT_EQ(v.inputs.to_vector<int32_t>(), std::vector<int32_t>({300, 301, 302}));

  // Without val_path: the last fraction of the same shards.
  const Corpus d = load_corpus(DataFormat::llmc, dir.file("c_train_*.bin"), "", 0.3);
  EXPECT_EQ(d.train_end, 7);
  EXPECT_EQ(d.val_begin, 7);
  EXPECT_EQ(d.val.size(), 10);
  const Corpus none = load_corpus(DataFormat::llmc, dir.file("c_train_*.bin"), "", 0.0);
  EXPECT_FALSE(none.has_validation());
}

TEST(Corpus, VocabularyMustExceedEveryTokenId) {
  TempDir dir;
  const auto train = dir.write("t.bin", llmc_shard({5, 255, 300, 12, 300}));
  const auto val = dir.write("v.bin", llmc_shard({1, 2, 999}));
  const Corpus c = load_corpus(DataFormat::llmc, train, "", 0.2);
  expect_mentions(error_of([&] { check_vocabulary(c, DataFormat::llmc, 256); }),
                  {"model.vocab_size = 256", train, "token 2 (byte offset 1028)",
                   "is token id 300", "model.vocab_size >= 301"});
  check_vocabulary(c, DataFormat::llmc, 301);
  const Corpus with_val = load_corpus(DataFormat::llmc, train, val, 0.1);
  expect_mentions(error_of([&] { check_vocabulary(with_val, DataFormat::llmc, 301); }),
                  {val, "token 2", "is token id 999"});
  check_vocabulary(with_val, DataFormat::llmc, 1000);

  const auto text = dir.write("t.txt", Bytes{'a', 'b', 'c'});
  const Corpus t = load_text(text, 0.0);
  expect_mentions(error_of([&] { check_vocabulary(t, DataFormat::text, 300); }),
                  {"model.vocab_size = 300", text, "read as bytes", "256"});
  check_vocabulary(t, DataFormat::text, 256);
}

TEST(DataConfig, FormatValPathAndWithinDocuments) {
  const std::string base = "[data]\npath = \"x\"\n";
  TrainConfig c = parse_config(base, "t.toml", {});
  EXPECT_EQ(c.data_format, DataFormat::text);
  EXPECT_EQ(c.val_path, "");
  EXPECT_FALSE(c.within_documents);
  c = parse_config(base + "format = \"megatron\"\nval_path = \"v\"\nwithin_documents = true\n",
                   "t.toml", {});
  EXPECT_EQ(c.data_format, DataFormat::megatron);
  EXPECT_EQ(c.val_path, "v");
  EXPECT_TRUE(c.within_documents);
  EXPECT_EQ(parse_config(to_toml(c), "back", {}).data_format, DataFormat::megatron);
  EXPECT_EQ(parse_config(base, "t.toml", {"--data.format=llmc"}).data_format, DataFormat::llmc);

  expect_mentions(error_of([&] { parse_config(base, "t.toml", {"--data.format=parquet"}); }),
                  {"data.format", "parquet", "\"text\", \"llmc\", \"megatron\""});
  for (const char* format : {"text", "llmc"})
    expect_mentions(error_of([&] {
                      parse_config(base, "t.toml",
                                   {std::string("--data.format=") + format,
                                    "--data.within_documents=true"});
                    }),
                    {"data.within_documents = true needs data.format = \"megatron\"",
                     std::string("got \"") + format + "\""});

  const std::string help = options_help();
  EXPECT_NE(help.find("--data.format=text|llmc|megatron"), std::string::npos);
  EXPECT_NE(help.find("--data.val_path=STRING"), std::string::npos);
  const size_t line = help.find("--data.val_path");
  EXPECT_EQ(help.substr(line, help.find('\n', line) - line).find("(required)"), std::string::npos)
      << "data.val_path is optional";
}

// ---- scripts/text_to_shards.py ---------------------------------------------------------------

TEST(TextToShards, ScriptOutputReadsBackAsTheText) {
  if (std::system("python3 --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  ASSERT_TRUE(fs::exists("scripts/text_to_shards.py")) << "the test runs from the source root";
  TempDir dir;
  Bytes text(2500);
  Rng rng(3);
  for (auto& b : text) b = uint8_t(rng.next_u64() >> 56);
  const auto input = dir.write("in.txt", text);
  const std::string prefix = dir.file("out/sh");
  const std::string cmd = "python3 scripts/text_to_shards.py " + input + " " + prefix +
                          " --val-fraction 0.2 --shard-tokens 700 > /dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  // 2000 training bytes in shards of 700, 700, 600; 500 validation bytes in one.
  for (const auto& [name, n] : std::vector<std::pair<std::string, int64_t>>{
           {"_train_000000.bin", 700}, {"_train_000001.bin", 700}, {"_train_000002.bin", 600},
           {"_val_000000.bin", 500}}) {
    const TokenSource shard = open_llmc_shard(prefix + name);
    EXPECT_EQ(shard.size(), n) << name;
  }
  EXPECT_FALSE(fs::exists(prefix + "_train_000003.bin"));
  const Corpus c =
      load_corpus(DataFormat::llmc, prefix + "_train_*.bin", prefix + "_val_*.bin", 0.1);
  EXPECT_EQ(all_tokens(c.train), std::vector<int32_t>(text.begin(), text.begin() + 2000));
  EXPECT_EQ(all_tokens(c.val), std::vector<int32_t>(text.begin() + 2000, text.end()));
  // The same split the trainer makes of the text itself.
  const Corpus t = load_text(input, 0.2);
  EXPECT_EQ(t.train_end, c.train.size());

  // Stale shards with the same prefix are refused, then replaced with --force.
  EXPECT_NE(std::system(cmd.c_str()), 0);
  const std::string force = "python3 scripts/text_to_shards.py " + input + " " + prefix +
                            " --val-fraction 0 --shard-tokens 5000 --force > /dev/null 2>&1";
  ASSERT_EQ(std::system(force.c_str()), 0) << force;
  EXPECT_FALSE(fs::exists(prefix + "_train_000001.bin"));
  EXPECT_FALSE(fs::exists(prefix + "_val_000000.bin"));
  EXPECT_EQ(all_tokens(open_llmc(prefix + "_train_*.bin")),
            std::vector<int32_t>(text.begin(), text.end()));
}

}  // namespace
}  // namespace remoe::train
