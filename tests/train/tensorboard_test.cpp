// TensorBoard event files: CRC-32C against published check values, and a written file read back
// by a small reader of its own (TFRecord frames, both CRCs, the protobuf fields) that shares no
// code with the writer.
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>

#include "tests/test_util.h"
#include "train/tensorboard.h"

namespace remoe::test {
namespace {

namespace fs = std::filesystem;

TEST(Crc32c, MatchesPublishedCheckValues) {
  // The CRC catalogue's check value, then RFC 3720 (iSCSI) B.4's 32-byte vectors.
  EXPECT_EQ(train::crc32c("123456789", 9), 0xE3069283u);
  const std::vector<uint8_t> zeros(32, 0x00), ones(32, 0xFF);
  std::vector<uint8_t> ascending(32);
  for (int i = 0; i < 32; ++i) ascending[size_t(i)] = uint8_t(i);
  EXPECT_EQ(train::crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(train::crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(train::crc32c(ascending.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(train::crc32c("", 0), 0u);
}

TEST(Crc32c, MaskedFormRotatesRightBy15AndAddsTheDelta) {
  // rotr(0xE3069283, 15) = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5 (computed by hand / Python).
  EXPECT_EQ(train::masked_crc32c("123456789", 9), 0xC78AB0E5u);
  EXPECT_EQ(train::masked_crc32c("", 0), 0xA282EAD8u);  // crc 0 masks to the delta itself
  EXPECT_EQ(train::masked_crc32c(std::vector<uint8_t>(32, 0).data(), 32), 0x0FD7FFFAu);
}

// --- a reader independent of the writer ---------------------------------------------------

uint64_t le(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | uint8_t(b[at + size_t(i)]);
  return v;
}

// Bitwise CRC-32C (no table), so a wrong table in the writer cannot hide here.
uint32_t slow_crc32c(const std::string& s) {
  uint32_t c = 0xFFFFFFFF;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
  }
  return ~c;
}
uint32_t mask(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xA282EAD8u; }

// The data of every record, after checking the length and both masked CRCs.
std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    EXPECT_GE(file.size() - at, 12u) << "truncated frame header at offset " << at;
    if (file.size() - at < 12) break;
    const uint64_t n = le(file, at, 8);
    EXPECT_EQ(le(file, at + 8, 4), mask(slow_crc32c(file.substr(at, 8)))) << "length CRC at " << at;
    EXPECT_GE(file.size() - at - 12, n + 4) << "truncated record at offset " << at;
    if (file.size() - at - 12 < n + 4) break;
    records.push_back(file.substr(at + 12, n));
    EXPECT_EQ(le(file, at + 12 + n, 4), mask(slow_crc32c(records.back()))) << "data CRC at " << at;
    at += 12 + n + 4;
  }
  return records;
}

struct Field {
  int wire = 0;
  uint64_t number = 0;  // varint, fixed64, fixed32
  std::string bytes;    // length-delimited
};

// field number -> its occurrences, in order; fails the test on malformed input.
std::multimap<uint32_t, Field> decode(const std::string& msg) {
  std::multimap<uint32_t, Field> fields;
  size_t at = 0;
  const auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0; at < msg.size() && shift < 64; shift += 7) {
      const auto b = uint8_t(msg[at++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    ADD_FAILURE() << "bad varint ending at " << at;
    at = msg.size();
    return v;
  };
  while (at < msg.size()) {
    const uint64_t key = varint();
    Field f;
    f.wire = int(key & 7);
    switch (f.wire) {
      case 0: f.number = varint(); break;
      case 1: f.number = le(msg, at, 8), at += 8; break;
      case 5: f.number = le(msg, at, 4), at += 4; break;
      case 2: {
        const uint64_t n = varint();
        f.bytes = msg.substr(at, n);
        at += n;
        break;
      }
      default: ADD_FAILURE() << "unexpected wire type " << f.wire; return fields;
    }
    EXPECT_LE(at, msg.size()) << "field runs past the message";
    fields.emplace(uint32_t(key >> 3), f);
  }
  return fields;
}

const Field& only(const std::multimap<uint32_t, Field>& m, uint32_t field, int wire) {
  static const Field kNone;
  EXPECT_EQ(m.count(field), 1u) << "field " << field;
  const auto it = m.find(field);
  if (it == m.end()) return kNone;
  EXPECT_EQ(it->second.wire, wire) << "field " << field;
  return it->second;
}

struct Event {
  double wall_time = 0;
  int64_t step = -1;
  std::optional<std::string> file_version;
  std::optional<uint64_t> session_status;
  std::vector<std::pair<std::string, float>> values;
};

Event parse_event(const std::string& data) {
  const auto f = decode(data);
  Event e;
  e.wall_time = std::bit_cast<double>(only(f, 1, 1).number);
  e.step = int64_t(only(f, 2, 0).number);
  if (f.count(3)) e.file_version = only(f, 3, 2).bytes;
  if (f.count(7)) e.session_status = only(decode(only(f, 7, 2).bytes), 1, 0).number;
  if (f.count(5)) {
    const auto summary = decode(only(f, 5, 2).bytes);
    for (const auto& [num, value] : summary) {
      EXPECT_EQ(num, 1u);
      EXPECT_EQ(value.wire, 2);
      const auto v = decode(value.bytes);
      e.values.emplace_back(only(v, 1, 2).bytes, std::bit_cast<float>(uint32_t(only(v, 2, 5).number)));
    }
  }
  return e;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class EventWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("remoe_tb_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(EventWriterTest, WritesFramedEventsTensorBoardCanRead) {
  const double before = now_s();
  std::string path;
  {
    train::EventWriter w((dir_ / "tb").string(), 21);
    path = w.path();
    w.write_scalars(7, {{"loss", 2.5f}, {"sparsity/layer_3", 0.875f}});
    w.write_scalars(8, {});  // nothing to say: no record
    w.write_scalars(1234567890123, {{"expert_load/layer_0/expert_5", 1e-8f}});
  }
  const double after = now_s();

  // events.out.tfevents.<unix seconds>.<hostname>, inside the directory it created.
  EXPECT_EQ(fs::path(path).parent_path(), dir_ / "tb");
  const std::string name = fs::path(path).filename().string();
  const std::string prefix = "events.out.tfevents.";
  ASSERT_TRUE(name.starts_with(prefix)) << name;
  const size_t dot = name.find('.', prefix.size());
  ASSERT_NE(dot, std::string::npos) << name;
  const double stamp = std::stod(name.substr(prefix.size(), dot - prefix.size()));
  EXPECT_GE(stamp, std::floor(before));
  EXPECT_LE(stamp, after);
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(name.substr(dot + 1), host);

  const auto records = read_records(path);
  ASSERT_EQ(records.size(), 4u);
  // The first record byte for byte around its timestamp: wall_time (key 0x09, 8 bytes), step 0
  // (0x10 0x00), file_version (0x1A, length 13, "brain.Event:2").
  ASSERT_EQ(records[0].size(), 26u);
  EXPECT_EQ(records[0][0], '\x09');
  EXPECT_EQ(records[0].substr(9), std::string("\x10\x00\x1a\x0d" "brain.Event:2", 17));

  const Event first = parse_event(records[0]);
  EXPECT_EQ(first.file_version, "brain.Event:2");
  EXPECT_EQ(first.step, 0);
  EXPECT_GE(first.wall_time, before);
  EXPECT_LE(first.wall_time, after);
  EXPECT_TRUE(first.values.empty());

  // A session START at the first step: TensorBoard drops older files' steps from there on.
  const Event start = parse_event(records[1]);
  EXPECT_EQ(start.step, 21);
  EXPECT_EQ(start.session_status, 1u);
  EXPECT_FALSE(start.file_version);
  EXPECT_TRUE(start.values.empty());

  const Event a = parse_event(records[2]);
  EXPECT_FALSE(a.file_version);
  EXPECT_EQ(a.step, 7);
  EXPECT_GE(a.wall_time, first.wall_time);
  EXPECT_LE(a.wall_time, after);
  ASSERT_EQ(a.values.size(), 2u);
  EXPECT_EQ(a.values[0].first, "loss");
  EXPECT_EQ(a.values[0].second, 2.5f);
  EXPECT_EQ(a.values[1].first, "sparsity/layer_3");
  EXPECT_EQ(a.values[1].second, 0.875f);

  const Event b = parse_event(records[3]);
  EXPECT_EQ(b.step, 1234567890123);  // a multi-byte varint
  ASSERT_EQ(b.values.size(), 1u);
  EXPECT_EQ(b.values[0].first, "expert_load/layer_0/expert_5");
  EXPECT_EQ(b.values[0].second, 1e-8f);
}

TEST_F(EventWriterTest, ASecondWriterInTheSameSecondGetsItsOwnFile) {
  const train::EventWriter a(dir_.string()), b(dir_.string());
  EXPECT_NE(a.path(), b.path());
  EXPECT_EQ(read_records(a.path()).size(), 2u);
  EXPECT_EQ(read_records(b.path()).size(), 2u);
  EXPECT_EQ(parse_event(read_records(b.path())[1]).step, 1);  // first_step's default
}

TEST_F(EventWriterTest, AnUncreatableDirectoryIsAnErrorNamingIt) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";  // a file where a directory should go
  const std::string bad = (dir_ / "file" / "tb").string();
  const std::string msg = error_of([&] { train::EventWriter w(bad); });
  EXPECT_NE(msg.find("log.tensorboard: cannot create directory " + bad), std::string::npos) << msg;
}

TEST(StepScalars, MoeStepHasRouterScalarsPerLayerAndExpert) {
  train::StepRecord r;
  r.step = 3;
  r.loss = 2.0;
  r.aux = 0.01;
  r.lr = 1e-3;
  r.lambda = 1.44e-8;
  r.sparsity = 0.8;
  r.grad_norm = 0.5;
  r.tokens_per_s = 1000;
  r.layer_sparsity = {0.7, 0.9};
  r.expert_load = {{0.25, 0.75}, {1.0, 0.0}};
  r.has_val = true;
  r.val_loss = 1.5;
  r.val_bpb = 1.5 / std::log(2.0);
  const train::Scalars s = train::step_scalars(r);
  const std::vector<std::string> tags = {
      "loss", "aux", "lr", "grad_norm", "tokens_per_s", "lambda", "sparsity",
      "sparsity/layer_0", "sparsity/layer_1",
      "expert_load/layer_0/expert_0", "expert_load/layer_0/expert_1",
      "expert_load/layer_1/expert_0", "expert_load/layer_1/expert_1", "val_loss", "val_bpb"};
  ASSERT_EQ(s.size(), tags.size());
  for (size_t i = 0; i < tags.size(); ++i) EXPECT_EQ(s[i].first, tags[i]) << i;
  EXPECT_EQ(s[5].second, 1.44e-8f);
  EXPECT_EQ(s[8].second, 0.9f);
  EXPECT_EQ(s[10].second, 0.75f);
  EXPECT_EQ(s[14].second, float(1.5 / std::log(2.0)));
}

TEST(StepScalars, RouterOptionsAddTheirNumbersWhenOn) {
  train::StepRecord r;
  r.layer_sparsity = {0.5};
  r.expert_load = {{0.5, 0.5}};
  r.dropped_fraction = {0.125};
  r.z_loss = 0.25;
  r.router_bias = {{-0.001, 0.002}};
  const train::Scalars s = train::step_scalars(r);
  const std::vector<std::pair<std::string, float>> tail = {
      {"dropped_fraction/layer_0", 0.125f}, {"z_loss", 0.25f},
      {"router_bias/layer_0/expert_0", -0.001f}, {"router_bias/layer_0/expert_1", 0.002f}};
  ASSERT_GE(s.size(), tail.size());
  for (size_t i = 0; i < tail.size(); ++i) EXPECT_EQ(s[s.size() - tail.size() + i], tail[i]) << i;
  // Off, they are absent.
  r.dropped_fraction.clear();
  r.z_loss.reset();
  r.router_bias.clear();
  EXPECT_EQ(train::step_scalars(r).size(), s.size() - tail.size());
}

TEST(StepScalars, DenseStepWithoutValidationHasNoRouterScalars) {
  train::StepRecord r;
  r.loss = 3.0;
  const train::Scalars s = train::step_scalars(r);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s[0], (std::pair<std::string, float>{"loss", 3.0f}));
  EXPECT_EQ(s[4].first, "tokens_per_s");
}

}  // namespace
}  // namespace remoe::test
