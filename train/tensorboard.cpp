#include "train/tensorboard.h"

#include <unistd.h>

#include <array>
#include <bit>
#include <chrono>
#include <filesystem>

#include "kernels/check.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;

constexpr uint32_t kCrc32cPoly = 0x82F63B78;  // Castagnoli, bit-reflected
constexpr uint32_t kMaskDelta = 0xa282ead8;
constexpr std::string_view kFileVersion = "brain.Event:2";
constexpr uint64_t kSessionStart = 1;  // SessionLog.SessionStatus.START

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? (c >> 1) ^ kCrc32cPoly : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

// Protobuf wire format: a key is (field << 3) | wire type.
enum Wire : uint8_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}

void put_key(std::string& out, uint32_t field, Wire wire) { put_varint(out, (field << 3) | wire); }

template <typename T>
void put_le(std::string& out, T v) {  // the value's bytes, least significant first
  for (size_t i = 0; i < sizeof(T); ++i) out += char(uint8_t(v >> (8 * i)));
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event's fields 1 and 2, which every record carries.
std::string event_header(int64_t step) {
  const double wall_time =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string e;
  put_key(e, 1, kFixed64);
  put_le(e, std::bit_cast<uint64_t>(wall_time));
  put_key(e, 2, kVarint);
  put_varint(e, uint64_t(step));  // int64: two's complement, as protobuf encodes negatives
  return e;
}

std::string hostname() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0 || buf[0] == '\0') return "localhost";
  std::string name(buf.data());
  for (char& ch : name)
    if (ch == '/') ch = '_';  // never a path separator in the file name
  return name;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xFFFFFFFF;
  for (size_t i = 0; i < size; ++i) c = kCrcTable[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + kMaskDelta;
}

EventWriter::EventWriter(const std::string& dir, int64_t first_step) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  REMOE_CHECK(!ec, "log.tensorboard: cannot create directory ", dir, ": ", ec.message());
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::system_clock::now().time_since_epoch());
  const std::string base =
      (fs::path(dir) / str_cat("events.out.tfevents.", now.count(), ".", hostname())).string();
  path_ = base;
  for (int n = 1; fs::exists(path_); ++n) path_ = str_cat(base, ".", n);
  out_.open(path_, std::ios::binary | std::ios::trunc);
  REMOE_CHECK(out_, "log.tensorboard: cannot create ", path_);
  std::string e = event_header(0);
  put_bytes(e, 3, kFileVersion);
  write_record(e);
  std::string session_log;
  put_key(session_log, 1, kVarint);
  put_varint(session_log, kSessionStart);
  std::string start = event_header(first_step);
  put_bytes(start, 7, session_log);
  write_record(start);
}

void EventWriter::write_scalars(int64_t step, const Scalars& scalars) {
  if (scalars.empty()) return;
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes(v, 1, tag);
    put_key(v, 2, kFixed32);
    put_le(v, std::bit_cast<uint32_t>(value));
    put_bytes(summary, 1, v);
  }
  std::string e = event_header(step);
  put_bytes(e, 5, summary);
  write_record(e);
}

void EventWriter::write_record(const std::string& data) {
  std::string frame;
  put_le(frame, uint64_t(data.size()));
  put_le(frame, masked_crc32c(frame.data(), 8));
  frame += data;
  put_le(frame, masked_crc32c(data.data(), data.size()));
  out_.write(frame.data(), std::streamsize(frame.size()));
  out_.flush();
  REMOE_CHECK(out_, "log.tensorboard: cannot write ", path_, " (disk full?)");
}

Scalars step_scalars(const StepRecord& r) {
  Scalars s = {{"loss", float(r.loss)},
               {"aux", float(r.aux)},
               {"lr", float(r.lr)},
               {"grad_norm", float(r.grad_norm)},
               {"tokens_per_s", float(r.tokens_per_s)}};
  if (!r.layer_sparsity.empty()) {  // an MoE model: what the router does
    s.emplace_back("lambda", float(r.lambda));
    s.emplace_back("sparsity", float(r.sparsity));
    for (size_t l = 0; l < r.layer_sparsity.size(); ++l)
      s.emplace_back(str_cat("sparsity/layer_", l), float(r.layer_sparsity[l]));
    for (size_t l = 0; l < r.expert_load.size(); ++l)
      for (size_t e = 0; e < r.expert_load[l].size(); ++e)
        s.emplace_back(str_cat("expert_load/layer_", l, "/expert_", e), float(r.expert_load[l][e]));
    // The router options' own numbers, when they are on (model/README.md's router table).
    for (size_t l = 0; l < r.dropped_fraction.size(); ++l)
      s.emplace_back(str_cat("dropped_fraction/layer_", l), float(r.dropped_fraction[l]));
    if (r.z_loss) s.emplace_back("z_loss", float(*r.z_loss));
    for (size_t l = 0; l < r.router_bias.size(); ++l)
      for (size_t e = 0; e < r.router_bias[l].size(); ++e)
        s.emplace_back(str_cat("router_bias/layer_", l, "/expert_", e), float(r.router_bias[l][e]));
  }
  if (r.has_val) {
    s.emplace_back("val_loss", float(r.val_loss));
    s.emplace_back("val_bpb", float(r.val_bpb));
  }
  return s;
}

}  // namespace remoe::train
