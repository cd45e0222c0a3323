#include "train/checkpoint.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "autodiff/device.h"
#include "tests/temp_dir.h"
#include "tests/test_util.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;
using test::expect_contains;
using test::read_file;
using test::error_of;
using test::TempDir;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good());
}

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file made by hand: the length field, the header text as given, then `data`.
std::string craft(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

std::string raw_bytes(const Tensor& t) {
  std::string s(t.nbytes(), '\0');
  if (t.nbytes()) std::memcpy(s.data(), t.raw(), t.nbytes());
  return s;
}

Tensor named(Tensor t, const std::string& name) {
  t.set_name(name);
  return t;
}

void expect_same_tensors(const std::vector<Tensor>& actual, const std::vector<Tensor>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    SCOPED_TRACE("tensor " + expected[i].name());
    EXPECT_EQ(actual[i].name(), expected[i].name());
    EXPECT_EQ(actual[i].shape(), expected[i].shape());
    EXPECT_EQ(actual[i].dtype(), expected[i].dtype());
    EXPECT_EQ(actual[i].device(), Device::cpu);
    EXPECT_EQ(raw_bytes(actual[i]), raw_bytes(expected[i]));  // bit-exact, NaN included
  }
}

std::vector<Tensor> sample_tensors() {
  const float inf = std::numeric_limits<float>::infinity();
  return {
      named(Tensor::from_vector<float>({2, 3}, {1.5f, -2.f, 0.f, -0.f, inf, std::nanf("")}),
            "layers.0.wq"),
      named(Tensor::from_vector<double>({3}, {1e-300, -3.25, 1.0 / 3.0}), "f64"),
      named(Tensor::from_vector<int32_t>({2, 2}, {0, -1, 2147483647, -2147483647 - 1}), "ids"),
      named(Tensor::from_vector<bf16>({4}, {float_to_bf16(1.f), float_to_bf16(-0.5f),
                                            float_to_bf16(3.140625f), bf16{0x7f80}}),
            "bf16"),
      named(Tensor::from_vector<double>({}, {42.5}), "scalar"),
      named(Tensor::zeros({0}, DType::f32), "empty"),
      named(Tensor::zeros({2, 0, 3}, DType::i32), "empty2"),
      named(Tensor::from_vector<float>({1}, {7.f}), "last"),
  };
}

// --- safetensors ---------------------------------------------------------------------

TEST(Safetensors, RoundTripsEveryDtypeScalarAndEmptyTensors) {
  TempDir dir;
  const auto tensors = sample_tensors();
  save_safetensors(dir.file("t.safetensors"), tensors);
  std::map<std::string, std::string> metadata{{"stale", "entry"}};
  const auto loaded = load_safetensors(dir.file("t.safetensors"), &metadata);
  expect_same_tensors(loaded, tensors);
  // The stale entry is gone; "format": "pt" is always written (Hugging Face's loaders need it).
  EXPECT_EQ(metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
}

TEST(Safetensors, ParsesAFileHeldInMemoryAsTheFileReaderDoes) {
  TempDir dir;
  const auto tensors = sample_tensors();
  save_safetensors(dir.file("t.safetensors"), tensors, {{"format", "pt"}});
  const std::string bytes = read_file(dir.file("t.safetensors"));
  std::map<std::string, std::string> metadata{{"stale", "entry"}};
  expect_same_tensors(parse_safetensors(bytes, "in memory", &metadata), tensors);
  EXPECT_EQ(metadata, (std::map<std::string, std::string>{{"format", "pt"}}));

  // One byte short: the last tensor's data lies beyond the buffer.
  const std::string message =
      error_of([&] { parse_safetensors(bytes.substr(0, bytes.size() - 1), "cut.bin"); });
  expect_contains(message, "cut.bin: tensor 'last' data_offsets");
  expect_contains(message, "lie beyond the");
}

TEST(Safetensors, RoundTripsMetadata) {
  TempDir dir;
  const std::map<std::string, std::string> metadata{
      {"format", "pt"}, {"step", "12"}, {"note", "λ \"quoted\" ünïcode"}, {"", "empty key"}};
  save_safetensors(dir.file("m.safetensors"), {named(Tensor::zeros({2}, DType::f32), "x")},
                   metadata);
  std::map<std::string, std::string> read;
  const auto loaded = load_safetensors(dir.file("m.safetensors"), &read);
  EXPECT_EQ(read, metadata);
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].name(), "x");

  // Metadata and no tensors at all.
  save_safetensors(dir.file("only.safetensors"), {}, {{"k", "v"}});
  EXPECT_TRUE(load_safetensors(dir.file("only.safetensors"), &read).empty());
  EXPECT_EQ(read, (std::map<std::string, std::string>{{"format", "pt"}, {"k", "v"}}));

  // A caller's own "format" replaces the default.
  save_safetensors(dir.file("mlx.safetensors"), {}, {{"format", "mlx"}});
  load_safetensors(dir.file("mlx.safetensors"), &read);
  EXPECT_EQ(read, (std::map<std::string, std::string>{{"format", "mlx"}}));
}

TEST(Safetensors, RawLayoutIsTheDocumentedFormat) {
  TempDir dir;
  const std::string path = dir.file("tiny.safetensors");
  save_safetensors(path,
                   {named(Tensor::from_vector<float>({2}, {1.f, -2.f}), "a"),
                    named(Tensor::from_vector<int32_t>({}, {258}), "b"),
                    named(Tensor::from_vector<bf16>({1, 1}, {bf16{0x3f80}}), "c")},
                   {{"who", "remoe"}});
  const std::string bytes = read_file(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u) << "the data must start 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + n + 8 + 4 + 2);

  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  const size_t close = header.find_last_of('}');
  ASSERT_NE(close, std::string::npos);
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos)
      << "only spaces may pad the header: [" << header << "]";
  EXPECT_LT(header.size() - close - 1, 8u);

  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j.size(), 4u);
  EXPECT_EQ(j["__metadata__"], (nlohmann::json{{"format", "pt"}, {"who", "remoe"}}));
  EXPECT_EQ(j["a"]["dtype"], "F32");
  EXPECT_EQ(j["a"]["shape"], nlohmann::json::array({2}));
  EXPECT_EQ(j["a"]["data_offsets"], nlohmann::json::array({0, 8}));
  EXPECT_EQ(j["b"]["dtype"], "I32");
  EXPECT_EQ(j["b"]["shape"], nlohmann::json::array());
  EXPECT_EQ(j["b"]["data_offsets"], nlohmann::json::array({8, 12}));
  EXPECT_EQ(j["c"]["dtype"], "BF16");
  EXPECT_EQ(j["c"]["shape"], nlohmann::json::array({1, 1}));
  EXPECT_EQ(j["c"]["data_offsets"], nlohmann::json::array({12, 14}));

  // 1.0f = 0x3f800000, -2.0f = 0xc0000000, 258 = 0x102, bf16 1.0 = 0x3f80; little-endian.
  const std::string data = bytes.substr(8 + n);
  const std::string expected("\x00\x00\x80\x3f\x00\x00\x00\xc0\x02\x01\x00\x00\x80\x3f", 14);
  EXPECT_EQ(data, expected);

  // Also check the F64 dtype string.
  save_safetensors(path, {named(Tensor::zeros({1}, DType::f64), "d")});
  const std::string b2 = read_file(path);
  EXPECT_NE(b2.find("\"dtype\":\"F64\""), std::string::npos) << b2;
  // Without caller metadata the header still carries {"format": "pt"}, first.
  EXPECT_NE(b2.find("{\"__metadata__\":{\"format\":\"pt\"},"), std::string::npos) << b2;
}

TEST(Safetensors, ReadsAHandMadeFileInDataOrder) {
  // No padding, tensors listed in the header in a different order than their data, an empty
  // tensor between two others.
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  const std::string header =
      R"({"second":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},)"
      R"("empty":{"dtype":"F64","shape":[0,2],"data_offsets":[4,4]},)"
      R"("first":{"shape":[],"data_offsets":[0,4],"dtype":"F32"}})";
  write_bytes(path, craft(header, std::string("\x00\x00\x40\x40\x07\x00\x00\x00", 8)));
  const auto loaded = load_safetensors(path);
  ASSERT_EQ(loaded.size(), 3u);
  EXPECT_EQ(loaded[0].name(), "first");
  EXPECT_EQ(loaded[0].shape(), Shape{});
  EXPECT_EQ(loaded[0].item(), 3.0);
  EXPECT_EQ(loaded[1].name(), "empty");
  EXPECT_EQ(loaded[1].shape(), (Shape{0, 2}));
  EXPECT_EQ(loaded[1].dtype(), DType::f64);
  EXPECT_EQ(loaded[2].name(), "second");
  EXPECT_EQ(loaded[2].to_vector<int32_t>(), std::vector<int32_t>{7});
}

struct Malformed {
  const char* label;
  std::string bytes;
  const char* expected;  // a part of the message besides the file name
};

std::string entry(const std::string& body) { return R"({"t":{)" + body + "}}"; }
const std::string k8(8, '\x01');

std::vector<Malformed> malformed_cases() {
  const std::string ok_t = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  return {
      {"empty file", "", "shorter than the 8-byte"},
      {"five bytes", std::string("\x05\x00\x00\x00\x00", 5),
       "file is 5 bytes, shorter than the 8-byte"},
      {"header length past the end", u64_le(100) + "{}", "header length 100 is larger than the 2"},
      {"huge header length", u64_le(~uint64_t(0)) + "{}", "is larger than"},
      {"bad json", craft("{\"t\": {", ""), "not valid JSON"},
      {"json not an object", craft("[1, 2]", ""), "header is a JSON array, expected an object"},
      {"entry not an object", craft(R"({"t": 3})", ""),
       "tensor 't': header entry is a JSON number"},
      {"no dtype", craft(entry(R"("shape":[2],"data_offsets":[0,8])"), k8),
       "tensor 't': header entry has no 'dtype'"},
      {"no shape", craft(entry(R"("dtype":"F32","data_offsets":[0,8])"), k8),
       "tensor 't': header entry has no 'shape'"},
      {"no data_offsets", craft(entry(R"("dtype":"F32","shape":[2])"), k8),
       "tensor 't': header entry has no 'data_offsets'"},
      {"unexpected key", craft(entry(ok_t + R"(,"extra":1)"), k8), "unexpected key 'extra'"},
      {"unknown dtype", craft(entry(R"("dtype":"F16","shape":[4],"data_offsets":[0,8])"), k8),
       "unsupported dtype \"F16\""},
      {"dtype not a string", craft(entry(R"("dtype":7,"shape":[2],"data_offsets":[0,8])"), k8),
       "dtype is 7"},
      {"negative dim", craft(entry(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"), k8),
       "shape is [-2]"},
      {"fractional dim", craft(entry(R"("dtype":"F32","shape":[2.5],"data_offsets":[0,8])"), k8),
       "shape is [2.5]"},
      {"overflowing shape",
       craft(entry(R"("dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8])"), k8),
       "is too large"},
      {"overflow behind a zero dim",
       craft(entry(R"("dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0])"),
             ""),
       "shape [4294967296,4294967296,0] is too large"},
      {"nested shape", craft(entry(R"("dtype":"F32","shape":[[2]],"data_offsets":[0,8])"), k8),
       "safetensors header nests deeper than 3 levels"},
      {"nested metadata", craft(R"({"__metadata__":{"k":{"a":1}}})", ""),
       "__metadata__ value of 'k' is {\"a\":1}, expected a string"},
      {"deep nesting",
       craft("{\"t\":" + std::string(1000000, '[') + std::string(1000000, ']') + "}", ""),
       "safetensors header nests deeper than 3 levels"},
      {"size mismatch", craft(entry(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), k8),
       "span 8 bytes, but shape (3) of F32 needs 12"},
      {"offsets not a pair", craft(entry(R"("dtype":"F32","shape":[2],"data_offsets":[0])"), k8),
       "data_offsets is [0]"},
      {"begin after end", craft(entry(R"("dtype":"F32","shape":[0],"data_offsets":[8,0])"), k8),
       "data_offsets is [8,0]"},
      {"offsets beyond the file",
       craft(entry(R"("dtype":"F32","shape":[2],"data_offsets":[4,12])"), k8),
       "data_offsets [4, 12] lie beyond the 8-byte data section"},
      {"overlap",
       craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
             k8),
       "tensor 'b' data_offsets [4, 8] overlap those of 'a' [0, 8]"},
      {"trailing bytes", craft(entry(ok_t), k8 + "\x02\x02\x02\x02"),
       "data section has 4 bytes not covered by any tensor"},
      {"gap", craft(entry(R"("dtype":"F32","shape":[1],"data_offsets":[4,8])"), k8),
       "data section has 4 bytes not covered by any tensor"},
      {"data without tensors", craft("{}", k8), "data section has 8 bytes not covered"},
      {"duplicate tensor", craft(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                 R"("t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                 k8),
       "has the key 't' twice"},
      {"duplicate field", craft(entry(ok_t + R"(,"dtype":"F64")"), k8),
       "has the key 'dtype' twice"},
      {"metadata not an object", craft(R"({"__metadata__":[1]})", ""),
       "__metadata__ is a JSON array"},
      {"metadata value not a string", craft(R"({"__metadata__":{"step":3}})", ""),
       "__metadata__ value of 'step' is 3, expected a string"},
  };
}

TEST(Safetensors, MalformedFilesGiveErrorsNamingTheFileAndTheProblem) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  for (const Malformed& m : malformed_cases()) {
    SCOPED_TRACE(m.label);
    write_bytes(path, m.bytes);
    const std::string message = error_of([&] { load_safetensors(path); });
    expect_contains(message, path);
    expect_contains(message, m.expected);
    // The in-memory reader gives the same message under its own source name.
    const std::string in_memory = error_of([&] { parse_safetensors(m.bytes, "buffer"); });
    expect_contains(in_memory, "buffer: ");
    expect_contains(in_memory, m.expected);
  }
  const std::string missing = dir.file("missing.safetensors");
  expect_contains(error_of([&] { load_safetensors(missing); }), missing);
}

TEST(Safetensors, RefusesDuplicateEmptyAndReservedNames) {
  TempDir dir;
  const std::string path = dir.file("names.safetensors");
  const Tensor a = named(Tensor::zeros({1}, DType::f32), "a");
  const Tensor a2 = named(Tensor::zeros({2}, DType::f32), "a");
  std::string message = error_of([&] { save_safetensors(path, {a, a2}); });
  expect_contains(message, path);
  expect_contains(message, "two tensors are named 'a'");
  EXPECT_FALSE(fs::exists(path));

  message = error_of([&] { save_safetensors(path, {a, Tensor::zeros({3, 2}, DType::f32)}); });
  expect_contains(message, "tensor #1 (3, 2) has an empty name");
  expect_contains(message, path);

  message = error_of([&] { save_safetensors(path, {named(Tensor::zeros({1}, DType::f32),
                                                         "__metadata__")}); });
  expect_contains(message, "may not be named __metadata__");

  message = error_of([&] { save_safetensors(path, {a, Tensor()}); });
  expect_contains(message, "tensor #1 is undefined");
  EXPECT_FALSE(fs::exists(path));
}

TEST(Safetensors, WritesGpuTensorsFromTheHost) {
  if (!device::cuda_available()) GTEST_SKIP() << "no GPU";
  TempDir dir;
  const auto tensors = sample_tensors();
  std::vector<Tensor> on_gpu;
  for (const Tensor& t : tensors) on_gpu.push_back(named(t.to(Device::cuda), t.name()));
  save_safetensors(dir.file("gpu.safetensors"), on_gpu);
  expect_same_tensors(load_safetensors(dir.file("gpu.safetensors")), tensors);
}

// --- copy_by_name --------------------------------------------------------------------

std::vector<Tensor> leaves() {
  std::vector<Tensor> v{named(Tensor::zeros({2, 2}, DType::f32), "layers.0.wq"),
                        named(Tensor::zeros({3}, DType::f64), "norm"),
                        named(Tensor::zeros({0}, DType::f32), "empty")};
  for (Tensor& t : v) t.set_requires_grad(true);
  return v;
}

TEST(CopyByName, CopiesIntoTheDestinationStorageWhateverTheOrder) {
  auto dst = leaves();
  const std::vector<Tensor> handles = dst;  // the same tensors, to check identity afterwards
  const void* wq_data = dst[0].raw();
  const std::vector<Tensor> src{
      named(Tensor::from_vector<double>({3}, {1, 2, 3}), "norm"),
      named(Tensor::zeros({0}, DType::f32), "empty"),
      named(Tensor::from_vector<float>({2, 2}, {4, 5, 6, 7}), "layers.0.wq")};
  copy_by_name(dst, src, "model.safetensors");
  EXPECT_EQ(handles[0].to_vector<float>(), (std::vector<float>{4, 5, 6, 7}));
  EXPECT_EQ(handles[1].to_vector<double>(), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(dst[0].raw(), wq_data);
  EXPECT_FALSE(dst[0].same_storage(src[2]));
  for (const Tensor& t : dst) EXPECT_TRUE(t.requires_grad());
  EXPECT_EQ(dst[0].impl(), handles[0].impl());
}

TEST(CopyByName, ErrorsNameTheSourceAndTheTensorAndLeaveTheDestinationAlone) {
  auto dst = leaves();
  auto good = [] {
    return std::vector<Tensor>{named(Tensor::full({2, 2}, 9, DType::f32), "layers.0.wq"),
                               named(Tensor::full({3}, 9, DType::f64), "norm"),
                               named(Tensor::zeros({0}, DType::f32), "empty")};
  };

  auto src = good();
  src.erase(src.begin());
  std::string message = error_of([&] { copy_by_name(dst, src, "ckpt/model.safetensors"); });
  EXPECT_EQ(message, "ckpt/model.safetensors: no tensor 'layers.0.wq'");

  src = good();
  src[1] = named(Tensor::zeros({4}, DType::f64), "norm");
  message = error_of([&] { copy_by_name(dst, src, "model.safetensors"); });
  expect_contains(message, "model.safetensors: tensor 'norm' is (4) f64, the model's is (3) f64");

  src = good();
  src[1] = named(Tensor::zeros({3}, DType::f32), "norm");
  message = error_of([&] { copy_by_name(dst, src, "model.safetensors"); });
  expect_contains(message, "model.safetensors: tensor 'norm' is (3) f32, the model's is (3) f64");

  src = good();
  src.push_back(named(Tensor::zeros({1}, DType::f32), "x"));
  message = error_of([&] { copy_by_name(dst, src, "optimizer.safetensors"); });
  EXPECT_EQ(message, "optimizer.safetensors has tensor 'x' that the model does not");

  src = good();
  src.push_back(named(Tensor::zeros({3}, DType::f64), "norm"));
  message = error_of([&] { copy_by_name(dst, src, "optimizer.safetensors"); });
  expect_contains(message, "two tensors named 'norm'");

  // None of the failed copies wrote anything (the good tensors came first in each).
  EXPECT_EQ(dst[0].to_vector<float>(), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(dst[1].to_vector<double>(), (std::vector<double>{0, 0, 0}));
}

TEST(CheckByName, ChecksLikeCopyByNameAndCopiesNothing) {
  auto dst = leaves();
  const std::vector<Tensor> src{named(Tensor::full({2, 2}, 9, DType::f32), "layers.0.wq"),
                                named(Tensor::full({3}, 9, DType::f64), "norm"),
                                named(Tensor::zeros({0}, DType::f32), "empty")};
  check_by_name(dst, src, "model.safetensors");  // matches: no error ...
  EXPECT_EQ(dst[0].to_vector<float>(), (std::vector<float>{0, 0, 0, 0}));  // ... and no copy
  EXPECT_EQ(error_of([&] { check_by_name(dst, {src[0], src[2]}, "ckpt/model.safetensors"); }),
            "ckpt/model.safetensors: no tensor 'norm'");
}

// --- checkpoints ---------------------------------------------------------------------

std::vector<Tensor> model_tensors(float v) {
  return {named(Tensor::full({2, 3}, v, DType::f32), "embed"),
          named(Tensor::from_vector<float>({}, {v * 2}), "scale")};
}

std::vector<Tensor> optimizer_tensors(float v) {
  return {named(Tensor::full({2, 3}, v / 10, DType::f32), "embed.m"),
          named(Tensor::full({2, 3}, v / 100, DType::f32), "embed.v"),
          named(Tensor::full({}, v / 10, DType::f32), "scale.m"),
          named(Tensor::full({}, v / 100, DType::f32), "scale.v")};
}

TEST(Checkpoint, SaveLoadRoundTrip) {
  TempDir run;
  const nlohmann::json state = {{"step", 7},  // overwritten by the step argument
                                {"lambda", 1.2e-8},
                                {"sampler", {1u, 2u, 18446744073709551615u, 4u}},
                                {"config", {{"model", {{"n_layers", 2}}}}}};
  const std::string dir =
      save_checkpoint(run.path().string(), 42, model_tensors(1.5f), optimizer_tensors(1.5f), state);
  EXPECT_EQ(fs::path(dir), run.path() / "checkpoints" / "step_00000042");
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json", "COMPLETE"})
    EXPECT_TRUE(fs::is_regular_file(fs::path(dir) / f)) << f;
  EXPECT_EQ(fs::file_size(fs::path(dir) / "COMPLETE"), 0u);
  EXPECT_FALSE(fs::exists(run.path() / "checkpoints" / "step_00000042.tmp"));

  const std::string text = read_file((fs::path(dir) / "state.json").string());
  EXPECT_NE(text.find("\n  \"lambda\""), std::string::npos) << "pretty JSON expected: " << text;
  const auto on_disk = nlohmann::json::parse(text);
  EXPECT_EQ(on_disk["step"], 42);

  const Checkpoint c = load_checkpoint(dir);
  EXPECT_EQ(c.dir, dir);
  EXPECT_EQ(c.step, 42);
  nlohmann::json expected_state = state;
  expected_state["step"] = 42;
  EXPECT_EQ(c.state, expected_state);
  EXPECT_EQ(c.state["sampler"][2].get<uint64_t>(), 18446744073709551615u);
  expect_same_tensors(c.model, model_tensors(1.5f));
  expect_same_tensors(c.optimizer, optimizer_tensors(1.5f));

  // Loading into a model: the workflow the trainer uses on resume.
  auto params = model_tensors(0.f);
  copy_by_name(params, c.model, c.dir + "/model.safetensors");
  expect_same_tensors(params, model_tensors(1.5f));
}

TEST(Checkpoint, LoadRefusesIncompleteOrInconsistentCheckpoints) {
  TempDir run;
  const std::string dir =
      save_checkpoint(run.path().string(), 3, model_tensors(1), optimizer_tensors(1), {});
  EXPECT_EQ(load_checkpoint(dir).state, (nlohmann::json{{"step", 3}}));

  fs::remove(fs::path(dir) / "COMPLETE");
  std::string message = error_of([&] { load_checkpoint(dir); });
  expect_contains(message, dir);
  expect_contains(message, "incomplete checkpoint");

  const std::string missing = (run.path() / "nowhere").string();
  expect_contains(error_of([&] { load_checkpoint(missing); }), missing);

  write_bytes((fs::path(dir) / "COMPLETE").string(), "");
  const std::string state_path = (fs::path(dir) / "state.json").string();
  write_bytes(state_path, "{\"step\": 3,");
  message = error_of([&] { load_checkpoint(dir); });
  expect_contains(message, state_path);
  expect_contains(message, "not valid JSON");

  write_bytes(state_path, R"({"step": 4})");
  expect_contains(error_of([&] { load_checkpoint(dir); }), "directory is for step 3");
  write_bytes(state_path, R"({"step": -1})");
  expect_contains(error_of([&] { load_checkpoint(dir); }), "\"step\" is -1");
  write_bytes(state_path, R"({"lambda": 1})");
  expect_contains(error_of([&] { load_checkpoint(dir); }), "has no \"step\"");

  write_bytes(state_path, R"({"step": 3})");
  write_bytes((fs::path(dir) / "model.safetensors").string(), "abc");
  expect_contains(error_of([&] { load_checkpoint(dir); }),
                  (fs::path(dir) / "model.safetensors").string());

  expect_contains(error_of([&] {
                    save_checkpoint(run.path().string(), -1, {}, {}, {});
                  }),
                  "step -1 is negative");
  expect_contains(error_of([&] {
                    save_checkpoint(run.path().string(), 1, {}, {}, nlohmann::json::array());
                  }),
                  "expected an object");
}

TEST(Checkpoint, LatestPicksTheHighestCompleteStep) {
  TempDir run;
  const std::string r = run.path().string();
  EXPECT_EQ(latest_checkpoint(r), std::nullopt);  // no checkpoints dir at all

  for (int64_t step : {5, 100, 20})
    save_checkpoint(r, step, model_tensors(float(step)), optimizer_tensors(float(step)),
                    {{"lambda", 1e-8}});
  const fs::path ck = run.path() / "checkpoints";
  EXPECT_EQ(latest_checkpoint(r), (ck / "step_00000100").string());

  // A crash before COMPLETE: 100 no longer counts.
  fs::remove(ck / "step_00000100" / "COMPLETE");
  // Leftovers that must be ignored: an unfinished .tmp dir (even one holding a COMPLETE file),
  // names that do not parse, and a plain file.
  for (const char* d : {"step_00000300.tmp", "step_abc", "step_", "step_12x", "stepx_00000400",
                        "step_99999999999999999999999"}) {
    fs::create_directories(ck / d);
    write_bytes((ck / d / "COMPLETE").string(), "");
  }
  write_bytes((ck / "step_00000500").string(), "not a dir");
  EXPECT_EQ(latest_checkpoint(r), (ck / "step_00000020").string());
  EXPECT_EQ(load_checkpoint(*latest_checkpoint(r)).step, 20);

  // Steps compare as numbers, not as names.
  save_checkpoint(r, 123456789, model_tensors(1), optimizer_tensors(1), {});
  EXPECT_EQ(latest_checkpoint(r), (ck / "step_123456789").string());

  TempDir empty_run;
  fs::create_directories(empty_run.path() / "checkpoints" / "step_00000001.tmp");
  EXPECT_EQ(latest_checkpoint(empty_run.path().string()), std::nullopt);
}

TEST(Checkpoint, SavingTheSameStepTwiceReplacesIt) {
  TempDir run;
  const std::string r = run.path().string();
  const std::string first =
      save_checkpoint(r, 10, model_tensors(1), optimizer_tensors(1), {{"tag", "first"}});
  write_bytes((fs::path(first) / "stray").string(), "from the first save");
  // A stale .tmp of the same step, as a crash would leave it.
  const fs::path tmp = run.path() / "checkpoints" / "step_00000010.tmp";
  fs::create_directories(tmp);
  write_bytes((tmp / "model.safetensors").string(), "garbage");

  const std::string second =
      save_checkpoint(r, 10, model_tensors(2), optimizer_tensors(2), {{"tag", "second"}});
  EXPECT_EQ(second, first);
  EXPECT_FALSE(fs::exists(fs::path(second) / "stray"));
  EXPECT_FALSE(fs::exists(tmp));
  const Checkpoint c = load_checkpoint(second);
  EXPECT_EQ(c.state["tag"], "second");
  expect_same_tensors(c.model, model_tensors(2));
  expect_same_tensors(c.optimizer, optimizer_tensors(2));
  EXPECT_EQ(latest_checkpoint(r), second);
}

// The checkpoint directories under run/checkpoints, sorted by name.
std::vector<std::string> listing(const TempDir& run) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(run.path() / "checkpoints"))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Checkpoint, PruneKeepsTheNewestAndTheMultiplesAndDropsCrashLeftovers) {
  TempDir run;
  const std::string r = run.path().string();
  EXPECT_TRUE(prune_checkpoints(r, 3, 0).empty());  // no checkpoints dir yet: nothing to do
  for (int64_t step = 1; step <= 10; ++step)
    save_checkpoint(r, step, model_tensors(float(step)), optimizer_tensors(float(step)), {});
  const fs::path ck = run.path() / "checkpoints";
  // Leftovers of crashes: a .tmp dir (of a step that exists complete, and of one that does
  // not) and a step dir that never got its COMPLETE. Other names are not ours: left alone.
  fs::create_directories(ck / "step_00000011.tmp");
  fs::create_directories(ck / "step_00000004.tmp");
  fs::create_directories(ck / "step_00000012");
  write_bytes((ck / "step_00000012" / "model.safetensors").string(), "half");
  fs::create_directories(ck / "notes.tmp");
  fs::create_directories(ck / "step_abc");
  write_bytes((ck / "README").string(), "mine");

  const auto removed = prune_checkpoints(r, 3, 4);
  std::vector<std::string> expected_removed;
  for (const char* d : {"step_00000001", "step_00000002", "step_00000003", "step_00000004.tmp",
                        "step_00000005", "step_00000006", "step_00000007", "step_00000011.tmp",
                        "step_00000012"})
    expected_removed.push_back((ck / d).string());
  EXPECT_EQ(removed, expected_removed);
  EXPECT_EQ(listing(run), (std::vector<std::string>{"README", "notes.tmp", "step_00000004",
                                                     "step_00000008", "step_00000009",
                                                     "step_00000010", "step_abc"}));
  EXPECT_EQ(load_checkpoint((ck / "step_00000004").string()).step, 4);
  EXPECT_EQ(latest_checkpoint(r), (ck / "step_00000010").string());

  // keep_every = 0 keeps only the newest; keep_last = 1 the newest alone.
  prune_checkpoints(r, 2, 0);
  EXPECT_EQ(listing(run), (std::vector<std::string>{"README", "notes.tmp", "step_00000009",
                                                     "step_00000010", "step_abc"}));
  prune_checkpoints(r, 1, 0);
  EXPECT_EQ(listing(run),
            (std::vector<std::string>{"README", "notes.tmp", "step_00000010", "step_abc"}));
  EXPECT_TRUE(prune_checkpoints(r, 1, 0).empty());

  expect_contains(error_of([&] { prune_checkpoints(r, 0, 0); }), "keep_last must be at least 1");
  expect_contains(error_of([&] { prune_checkpoints(r, 1, -1); }), "keep_every must be >= 0");
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

TEST(Checkpoint, TestDelayVariableSlowsTheWriteAndRejectsGarbage) {
  TempDir run;
  const std::string r = run.path().string();
  {
    ScopedEnv delay("REMOE_TEST_CHECKPOINT_DELAY_MS", "25");
    const auto t0 = std::chrono::steady_clock::now();
    save_checkpoint(r, 1, model_tensors(1), optimizer_tensors(1), {});
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GE(ms, 100.0) << "four pauses of 25 ms";
  }
  for (const char* bad : {"soon", "-5", "10ms"}) {
    ScopedEnv delay("REMOE_TEST_CHECKPOINT_DELAY_MS", bad);
    const std::string message = error_of([&] {
      save_checkpoint(r, 2, model_tensors(1), optimizer_tensors(1), {});
    });
    expect_contains(message, std::string("REMOE_TEST_CHECKPOINT_DELAY_MS = '") + bad + "'");
    expect_contains(message, "non-negative integer");
  }
  EXPECT_EQ(latest_checkpoint(r), (run.path() / "checkpoints" / "step_00000001").string());
}

}  // namespace
}  // namespace remoe::train
