#include "train/data.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "tests/temp_dir.h"
#include "tests/test_util.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;
using remoe::test::error_of;
using test::TempDir;

// bytes[i] = i % 256: in a corpus of at most 256 bytes a window's first input is its start.
std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(i % 256);
  return v;
}

std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng.next_u64() >> 56);
  return v;
}

std::vector<int32_t> ints(const Tensor& t) { return t.to_vector<int32_t>(); }

std::vector<int32_t> all_tokens(const TokenSource& s) {
  std::vector<int32_t> v(size_t(s.size()));
  s.read(0, s.size(), v.data());
  return v;
}

// Fails unless `message` contains every one of `parts`.
void expect_mentions(const std::string& message, std::initializer_list<std::string> parts) {
  EXPECT_FALSE(message.empty());
  for (const auto& part : parts)
    EXPECT_NE(message.find(part), std::string::npos)
        << "message lacks \"" << part << "\":\n  " << message;
}

// ---- load_text ----------------------------------------------------------------------------

TEST(DataLoad, BytesBecomeTokenIdsIncludingHighBytes) {
  TempDir dir;
  const std::vector<uint8_t> bytes = {0, 'A', 'z', 10, 127, 128, 129, 200, 0xC3, 0xA9, 254, 255};
  const auto path = dir.write("b.txt", bytes);
  const Corpus c = load_text(path, 0.0);
  EXPECT_EQ(c.train.name(), path);
  EXPECT_EQ(all_tokens(c.train), std::vector<int32_t>(bytes.begin(), bytes.end()));
  EXPECT_EQ(c.train.max_token(), 255);
  EXPECT_EQ(c.train.max_token_offset(), 11);
  EXPECT_TRUE(c.train.document_starts().empty());
  EXPECT_FALSE(c.has_validation());
  EXPECT_EQ(c.train_end, int64_t(bytes.size()));

  // One possible window (S = size − 1): it is the whole file.
  const int64_t S = int64_t(bytes.size()) - 1;
  WindowSampler sampler(c.train, 0, c.train_end, S, 7, "train");
  const Batch b = sampler.next(2);
  ASSERT_EQ(b.inputs.dtype(), DType::i32);
  ASSERT_EQ(b.targets.dtype(), DType::i32);
  ASSERT_EQ(b.inputs.shape(), Shape({2 * S}));
  ASSERT_EQ(b.targets.shape(), Shape({2 * S}));
  const std::vector<int32_t> in = {0, 65, 122, 10, 127, 128, 129, 200, 195, 169, 254};
  const std::vector<int32_t> tg = {65, 122, 10, 127, 128, 129, 200, 195, 169, 254, 255};
  std::vector<int32_t> in2 = in, tg2 = tg;
  in2.insert(in2.end(), in.begin(), in.end());
  tg2.insert(tg2.end(), tg.begin(), tg.end());
  EXPECT_EQ(ints(b.inputs), in2);
  EXPECT_EQ(ints(b.targets), tg2);

  const Batch f = fixed_batch(c.train, 0, c.train_end, S, 1, 0, 1);
  EXPECT_EQ(ints(f.inputs), in);
  EXPECT_EQ(ints(f.targets), tg);
}

TEST(DataLoad, SplitBoundary) {
  TempDir dir;
  const auto path = dir.write("k.txt", random_bytes(1000, 1));
  EXPECT_EQ(load_text(path, 0.1).train_end, 900);
  EXPECT_EQ(load_text(path, 0.0).train_end, 1000);
  EXPECT_EQ(load_text(path, 0.25).train_end, 750);
  EXPECT_EQ(load_text(path, 0.0015).train_end, 999);  // ⌊1.5⌋ = 1 validation byte
  EXPECT_EQ(load_text(path, 0.999).train_end, 1);
  EXPECT_EQ(load_text(path, 0.1).train.size(), 1000);
}

TEST(DataLoad, TinyShakespeare) {
  const std::string path = "/work/shared/data/tinyshakespeare.txt";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is not here";
  const Corpus c = load_text(path, 0.1);
  ASSERT_EQ(c.train.size(), 1115394);
  EXPECT_EQ(c.train_end, 1115394 - 111539);
  std::vector<int32_t> head(14);
  c.train.read(0, 14, head.data());
  EXPECT_EQ(std::string(head.begin(), head.end()), "First Citizen:");
  EXPECT_EQ(c.val_begin, c.train_end);
  EXPECT_EQ(c.val.size(), c.train.size());
  WindowSampler val(c.val, c.val_begin, c.val.size(), 64, 3, "validation");
  const auto in = ints(val.next(4).inputs);
  EXPECT_TRUE(std::all_of(in.begin(), in.end(), [](int32_t v) { return v >= 0 && v < 256; }));
}

TEST(DataLoad, Errors) {
  TempDir dir;
  const auto good = dir.write("good.txt", random_bytes(100, 2));

  const auto missing = dir.file("missing.txt");
  expect_mentions(error_of([&] { load_text(missing, 0.1); }), {missing, "no such file"});

  fs::create_directories(dir.file("adir"));
  expect_mentions(error_of([&] { load_text(dir.file("adir"), 0.1); }),
                  {dir.file("adir"), "is a directory"});

  const auto empty = dir.write("empty.txt", {});
  expect_mentions(error_of([&] { load_text(empty, 0.0); }), {empty, "is empty"});

  for (double v : {-0.1, 1.0, 1.5, std::nan("")})
    expect_mentions(error_of([&] { load_text(good, v); }), {good, "val_fraction", "[0, 1)"});

  const auto tiny = dir.write("tiny.txt", random_bytes(10, 3));
  expect_mentions(error_of([&] { load_text(tiny, 0.05); }),
                  {tiny, "empty validation split", "10 tokens", "0.05"});
  EXPECT_EQ(load_text(tiny, 0.1).train_end, 9);

  const auto xz = dir.write("corpus.txt.xz", random_bytes(50, 4));
  expect_mentions(error_of([&] { load_text(xz, 0.1); }),
                  {xz, "compressed", "not read yet", "xz -dk " + xz});
}

TEST(DataLoad, UnreadableFile) {
  TempDir dir;
  const auto path = dir.write("secret.txt", random_bytes(100, 5));
  fs::permissions(path, fs::perms::none);
  if (std::ifstream(path).is_open()) GTEST_SKIP() << "running with rights to read mode-000 files";
  expect_mentions(error_of([&] { load_text(path, 0.1); }), {path, "cannot read"});
}

// ---- WindowSampler ------------------------------------------------------------------------

TEST(DataSampler, WindowsMatchTheCorpusAndTargetsAreShiftedInputs) {
  TempDir dir;
  const auto bytes = random_bytes(500, 6);
  const Corpus c = load_text(dir.write("r.txt", bytes), 0.2);
  ASSERT_EQ(c.train_end, 400);
  const int64_t S = 16, B = 8, begin = 0, end = c.train_end;
  WindowSampler sampler(c.train, begin, end, S, 42, "train");
  Rng ref(42);  // the contract: one below(n_starts) draw per window, in batch order
  for (int step = 0; step < 5; ++step) {
    const Batch batch = sampler.next(B);
    const auto in = ints(batch.inputs), tg = ints(batch.targets);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t start = begin + ref.below(end - begin - S);
      for (int64_t t = 0; t < S; ++t) {
        ASSERT_EQ(in[b * S + t], int32_t(bytes[start + t])) << "window " << b << " t " << t;
        ASSERT_EQ(tg[b * S + t], int32_t(bytes[start + t + 1])) << "window " << b << " t " << t;
        if (t + 1 < S) {
          ASSERT_EQ(tg[b * S + t], in[b * S + t + 1]);
        }
      }
    }
  }
}

TEST(DataSampler, WindowsStayInsideTheSplitAndReachEveryStart) {
  TempDir dir;
  const Corpus c = load_text(dir.write("i.txt", iota_bytes(40)), 0.0);
  const int64_t begin = 10, end = 25, S = 8;  // starts 10..16
  WindowSampler sampler(c.train, begin, end, S, 9, "validation");
  std::set<int32_t> starts;
  for (int i = 0; i < 200; ++i) {
    const Batch batch = sampler.next(10);
    const auto in = ints(batch.inputs), tg = ints(batch.targets);
    for (int64_t b = 0; b < 10; ++b) {
      const int32_t start = in[b * S];
      ASSERT_GE(start, begin);
      ASSERT_LE(start, end - S - 1);
      ASSERT_LE(tg[b * S + S - 1], end - 1);  // the last target byte is still inside
      starts.insert(start);
    }
  }
  EXPECT_EQ(starts, std::set<int32_t>({10, 11, 12, 13, 14, 15, 16}));
}

TEST(DataSampler, DeterministicForASeedAndSeedsDiffer) {
  TempDir dir;
  const Corpus c = load_text(dir.write("r.txt", random_bytes(3000, 7)), 0.1);
  WindowSampler a(c.train, 0, c.train_end, 32, 1234, "train");
  WindowSampler b(c.train, 0, c.train_end, 32, 1234, "train");
  WindowSampler d(c.train, 0, c.train_end, 32, 1235, "train");
  bool differs = false;
  for (int i = 0; i < 4; ++i) {
    const Batch x = a.next(4), y = b.next(4), z = d.next(4);
    EXPECT_EQ(ints(x.inputs), ints(y.inputs));
    EXPECT_EQ(ints(x.targets), ints(y.targets));
    differs = differs || ints(x.inputs) != ints(z.inputs);
  }
  EXPECT_TRUE(differs) << "seeds 1234 and 1235 gave the same windows";
}

TEST(DataSampler, StateRestoreReplaysTheSameBatches) {
  TempDir dir;
  const Corpus c = load_text(dir.write("r.txt", random_bytes(3000, 8)), 0.1);
  WindowSampler s(c.train, 0, c.train_end, 24, 77, "train");
  s.next(3);
  s.next(5);
  const auto saved = s.state();
  std::vector<std::vector<int32_t>> first;
  for (int i = 0; i < 3; ++i) {
    const Batch b = s.next(4);
    first.push_back(ints(b.inputs));
    first.push_back(ints(b.targets));
  }
  EXPECT_NE(s.state(), saved);

  // The same sampler rewound, and a fresh one with another seed given the saved state.
  WindowSampler other(c.train, 0, c.train_end, 24, 1, "train");
  s.set_state(saved);
  other.set_state(saved);
  for (WindowSampler* r : {&s, &other}) {
    for (int i = 0; i < 3; ++i) {
      const Batch b = r->next(4);
      EXPECT_EQ(ints(b.inputs), first[2 * i]);
      EXPECT_EQ(ints(b.targets), first[2 * i + 1]);
    }
  }
}

TEST(DataSampler, Errors) {
  TempDir dir;
  const auto path = dir.write("short.txt", random_bytes(100, 9));
  const Corpus c = load_text(path, 0.1);  // train 90 bytes, validation 10

  const std::string train_msg = error_of([&] { WindowSampler(c.train, 0, c.train_end, 90, 1, "train"); });
  expect_mentions(train_msg,
                  {path, "train", "90 tokens", "91 tokens", "a sequence longer than the data"});
  EXPECT_EQ(train_msg.find('\n'), std::string::npos) << "one line: " << train_msg;

  expect_mentions(error_of([&] { WindowSampler(c.train, c.train_end, 100, 10, 1, "validation"); }),
                  {path, "validation", "10 tokens", "11 tokens", "a sequence longer than the data"});
  WindowSampler(c.train, c.train_end, 100, 9, 1, "validation");  // exactly one window fits

  expect_mentions(error_of([&] { WindowSampler(c.train, 0, 101, 4, 1, "train"); }),
                  {path, "train", "[0, 101)", "100-token source"});
  expect_mentions(error_of([&] { WindowSampler(c.train, 50, 40, 4, 1, "train"); }),
                  {path, "[50, 40)"});
  expect_mentions(error_of([&] { WindowSampler(c.train, 0, 90, 0, 1, "train"); }),
                  {path, "seq_len", "got 0"});
  WindowSampler ok(c.train, 0, 90, 8, 1, "train");
  expect_mentions(error_of([&] { ok.next(0); }), {path, "batch_size", "got 0"});
}

// ---- fixed_batch --------------------------------------------------------------------------

TEST(DataFixedBatch, IdenticalBetweenCallsAndSpreadEvenly) {
  TempDir dir;
  const Corpus c = load_text(dir.write("i.txt", iota_bytes(200)), 0.0);
  const int64_t begin = 100, end = 200, S = 9, B = 5, N = 4;
  const int64_t span = end - begin - S;  // 91 starts: 100..190
  std::vector<int32_t> starts;
  for (int64_t k = 0; k < N; ++k) {
    const Batch x = fixed_batch(c.train, begin, end, S, B, k, N);
    const Batch y = fixed_batch(c.train, begin, end, S, B, k, N);
    EXPECT_EQ(ints(x.inputs), ints(y.inputs));
    EXPECT_EQ(ints(x.targets), ints(y.targets));
    const auto in = ints(x.inputs), tg = ints(x.targets);
    ASSERT_EQ(int64_t(in.size()), B * S);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t j = k * B + b;
      const int32_t start = in[b * S];
      EXPECT_EQ(start, begin + j * span / (N * B)) << "window " << j;
      for (int64_t t = 0; t < S; ++t) {
        EXPECT_EQ(in[b * S + t], start + t);
        EXPECT_EQ(tg[b * S + t], start + t + 1);
      }
      starts.push_back(start);
    }
  }
  // Even spread: from begin, gaps of ⌊91/20⌋ or ⌈91/20⌉, the last window near the split's end.
  EXPECT_EQ(starts.front(), begin);
  for (size_t i = 1; i < starts.size(); ++i) {
    EXPECT_GE(starts[i] - starts[i - 1], 4);
    EXPECT_LE(starts[i] - starts[i - 1], 5);
  }
  EXPECT_LE(starts.back(), end - S - 1);
  EXPECT_GE(starts.back(), end - S - 1 - 5);
}

TEST(DataFixedBatch, AsManyWindowsAsStartsUsesEachStartOnce) {
  TempDir dir;
  const Corpus c = load_text(dir.write("i.txt", iota_bytes(60)), 0.0);
  const int64_t begin = 5, end = 50, S = 5;  // 40 starts: 5..44
  std::vector<int32_t> starts;
  for (int64_t k = 0; k < 8; ++k) {
    const auto in = ints(fixed_batch(c.train, begin, end, S, 5, k, 8).inputs);
    for (int64_t b = 0; b < 5; ++b) starts.push_back(in[b * S]);
  }
  std::vector<int32_t> expected(40);
  for (int i = 0; i < 40; ++i) expected[i] = 5 + i;
  EXPECT_EQ(starts, expected);

  // More windows than starts: repeats, still in order and inside the split.
  std::vector<int32_t> many;
  for (int64_t k = 0; k < 10; ++k) {
    const auto in = ints(fixed_batch(c.train, begin, end, S, 7, k, 10).inputs);
    for (int64_t b = 0; b < 7; ++b) many.push_back(in[b * S]);
  }
  EXPECT_TRUE(std::is_sorted(many.begin(), many.end()));
  EXPECT_EQ(many.front(), 5);
  EXPECT_EQ(many.back(), 44);  // ⌊69 · 40 / 70⌋ = 39
  EXPECT_EQ(std::set<int32_t>(many.begin(), many.end()).size(), 40u);
}

TEST(DataFixedBatch, Errors) {
  TempDir dir;
  const auto path = dir.write("short.txt", random_bytes(100, 10));
  const Corpus c = load_text(path, 0.1);
  expect_mentions(error_of([&] { fixed_batch(c.train, c.train_end, 100, 10, 2, 0, 3); }),
                  {path, "validation", "10 tokens", "11 tokens", "a sequence longer than the data"});
  expect_mentions(error_of([&] { fixed_batch(c.train, 0, c.train_end, 90, 2, 0, 3, "train"); }),
                  {path, "train", "90 tokens", "91 tokens"});
  expect_mentions(error_of([&] { fixed_batch(c.train, 0, 90, 8, 2, 3, 3); }),
                  {path, "batch index 3", "[0, 3)"});
  expect_mentions(error_of([&] { fixed_batch(c.train, 0, 90, 8, 2, -1, 3); }),
                  {path, "batch index -1", "[0, 3)"});
  expect_mentions(error_of([&] { fixed_batch(c.train, 0, 90, 8, 0, 0, 3); }), {path, "batch_size"});
  expect_mentions(error_of([&] { fixed_batch(c.train, 0, 90, 8, 2, 0, 0); }), {path, "n_batches"});
  expect_mentions(error_of([&] { fixed_batch(c.train, 0, 200, 8, 2, 0, 1); }),
                  {path, "[0, 200)", "100-token source"});
}

}  // namespace
}  // namespace remoe::train
