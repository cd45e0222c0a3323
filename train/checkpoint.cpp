#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <thread>
#include <unordered_map>

#include "autodiff/device.h"

namespace remoe::train {

namespace fs = std::filesystem;

// The file format is little-endian and tensors are written straight from their storage.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes little-endian");

namespace {

using ojson = nlohmann::ordered_json;

constexpr size_t kAlign = 8;
constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kComplete = "COMPLETE";
constexpr int kMaxHeaderDepth = 2;  // the deepest container: an entry's shape or data_offsets

const char* st_dtype(DType d) {
  switch (d) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
  }
  return "?";
}

std::optional<DType> parse_st_dtype(const std::string& s) {
  if (s == "F32") return DType::f32;
  if (s == "F64") return DType::f64;
  if (s == "BF16") return DType::bf16;
  if (s == "I32") return DType::i32;
  return std::nullopt;
}

std::string errno_str() { return std::strerror(errno); }

// A file written with POSIX calls so that it can be fsynced before it is closed. A file that is
// not finished (an exception on the way) is closed and removed by the destructor.
class SyncedFile {
 public:
  explicit SyncedFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REMOE_CHECK(fd_ >= 0, path_, ": cannot create: ", errno_str());
  }
  ~SyncedFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(path_.c_str());
    }
  }
  SyncedFile(const SyncedFile&) = delete;
  SyncedFile& operator=(const SyncedFile&) = delete;

  void write(const void* data, size_t bytes) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t n = ::write(fd_, p, std::min(bytes, size_t(1) << 30));
      if (n < 0 && errno == EINTR) continue;
      REMOE_CHECK(n > 0, path_, ": write failed: ", n < 0 ? errno_str() : "no progress");
      p += n;
      bytes -= size_t(n);
    }
  }

  void sync_and_close() {
    REMOE_CHECK(::fsync(fd_) == 0, path_, ": fsync failed: ", errno_str());
    const int fd = fd_;
    fd_ = -1;
    REMOE_CHECK(::close(fd) == 0, path_, ": close failed: ", errno_str());
  }

 private:
  std::string path_;
  int fd_ = -1;
};

void write_file_synced(const std::string& path, const std::string& contents) {
  SyncedFile f(path);
  f.write(contents.data(), contents.size());
  f.sync_and_close();
}

// Makes a directory's entries (files created, renamed or removed in it) durable.
void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REMOE_CHECK(fd >= 0, dir.string(), ": cannot open directory to fsync it: ", errno_str());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems do not support fsync on directories; their entries are as durable as
  // they get.
  REMOE_CHECK(rc == 0 || err == EINVAL, dir.string(), ": fsync failed: ", std::strerror(err));
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REMOE_CHECK(in, path, ": cannot open for reading");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REMOE_CHECK(!in.bad(), path, ": read failed");
  return s;
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

// The step of a "step_<digits>" name; nullopt for anything else (".tmp" dirs included).
std::optional<int64_t> parse_step_dir_name(const std::string& name) {
  constexpr std::string_view kPrefix = "step_";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0)
    return std::nullopt;
  const char* first = name.data() + kPrefix.size();
  const char* last = name.data() + name.size();
  if (!std::all_of(first, last, [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  int64_t step = 0;
  const auto [ptr, ec] = std::from_chars(first, last, step);
  if (ec != std::errc() || ptr != last) return std::nullopt;
  return step;
}

// A non-negative integer that fits int64, or nullopt.
template <typename Json>
std::optional<int64_t> json_index(const Json& j) {
  if (j.is_number_unsigned()) {
    const uint64_t v = j.template get<uint64_t>();
    if (v > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return int64_t(v);
  }
  if (j.is_number_integer()) {
    const int64_t v = j.template get<int64_t>();
    if (v < 0) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

// Parses the header, rejecting duplicate keys (nlohmann would silently keep the last one) and
// nesting deeper than a tensor entry's arrays: a header of a million '[' would otherwise be
// built in full and then overflow the stack of the recursive copy and dump.
ojson parse_header(const std::string& path, const std::string& text) {
  std::string duplicate;
  std::set<std::string> top_keys, entry_keys;
  auto callback = [&](int depth, ojson::parse_event_t event, ojson& parsed) {
    // depth counts the enclosing values: 0 the header, 1 an entry, 2 its shape or data_offsets.
    if ((event == ojson::parse_event_t::object_start ||
         event == ojson::parse_event_t::array_start) && depth > kMaxHeaderDepth)
      REMOE_FAIL(path, ": safetensors header nests deeper than ", kMaxHeaderDepth + 1,
                 " levels (an object of tensor entries holding arrays of numbers)");
    if (event != ojson::parse_event_t::key || !duplicate.empty()) return true;
    const std::string key = parsed.get<std::string>();
    if (depth == 1) {
      entry_keys.clear();
      if (!top_keys.insert(key).second) duplicate = key;
    } else if (depth == 2 && !entry_keys.insert(key).second) {
      duplicate = key;
    }
    return true;
  };
  ojson header;
  try {
    header = ojson::parse(text, callback);
  } catch (const nlohmann::json::exception& e) {
    REMOE_FAIL(path, ": safetensors header is not valid JSON: ", e.what());
  }
  REMOE_CHECK(duplicate.empty(), path, ": safetensors header has the key '", duplicate,
              "' twice");
  REMOE_CHECK(header.is_object(), path, ": safetensors header is a JSON ", header.type_name(),
              ", expected an object");
  return header;
}

Entry parse_entry(const std::string& path, const std::string& name, const ojson& j) {
  const std::string where = str_cat(path, ": tensor '", name, "'");
  REMOE_CHECK(!name.empty(), path, ": a tensor has an empty name");
  REMOE_CHECK(j.is_object(), where, ": header entry is a JSON ", j.type_name(),
              ", expected an object with dtype, shape and data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    REMOE_CHECK(j.contains(key), where, ": header entry has no '", key, "'");
  for (const auto& [key, value] : j.items())
    REMOE_CHECK(key == "dtype" || key == "shape" || key == "data_offsets", where,
                ": unexpected key '", key, "' (expected dtype, shape, data_offsets)");

  Entry e{name, DType::f32, {}, 0, 0};
  const ojson& dtype = j["dtype"];
  REMOE_CHECK(dtype.is_string(), where, ": dtype is ", dtype.dump(), ", expected a string");
  const auto parsed = parse_st_dtype(dtype.get<std::string>());
  REMOE_CHECK(parsed, where, ": unsupported dtype ", dtype.dump(),
              " (expected F32, F64, BF16 or I32)");
  e.dtype = *parsed;

  const ojson& shape = j["shape"];
  REMOE_CHECK(shape.is_array(), where, ": shape is ", shape.dump(),
              ", expected an array of non-negative integers");
  // The byte size with an overflow check: a hostile shape must not wrap around to a match, nor
  // hide behind a zero dimension a product of the others that overflows the int64 element count
  // the tensor computes ((2^32, 2^32, 0) is refused).
  uint64_t bytes = dtype_size(e.dtype);
  bool overflow = false, empty = false;
  for (const ojson& d : shape) {
    const auto v = json_index(d);
    REMOE_CHECK(v, where, ": shape is ", shape.dump(),
                ", expected an array of non-negative integers");
    e.shape.push_back(*v);
    if (*v == 0) {
      empty = true;
    } else if (bytes > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(*v)) {
      overflow = true;
    } else {
      bytes *= uint64_t(*v);
    }
  }
  REMOE_CHECK(!overflow, where, ": shape ", shape.dump(), " is too large");
  if (empty) bytes = 0;

  const ojson& offsets = j["data_offsets"];
  std::optional<int64_t> b, end;
  if (offsets.is_array() && offsets.size() == 2) {
    b = json_index(offsets[0]);
    end = json_index(offsets[1]);
  }
  REMOE_CHECK(b && end && *b <= *end, where, ": data_offsets is ", offsets.dump(),
              ", expected [begin, end] with 0 <= begin <= end");
  e.begin = uint64_t(*b);
  e.end = uint64_t(*end);
  REMOE_CHECK(e.end - e.begin == bytes, where, ": data_offsets ", offsets.dump(), " span ",
              e.end - e.begin, " bytes, but shape ", shape_str(e.shape), " of ",
              dtype.get<std::string>(), " needs ", bytes);
  return e;
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  std::set<std::string> names;
  ojson header = ojson::object();
  // "format": "pt" tells Hugging Face's loaders (transformers refuses a file without it) that
  // the tensors follow PyTorch's conventions; a caller's own "format" takes precedence.
  ojson& m = header[kMetadataKey] = ojson::object();
  m["format"] = "pt";
  for (const auto& [k, v] : metadata) m[k] = v;
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    REMOE_CHECK(t.defined(), path, ": tensor #", i, " is undefined");
    const std::string& name = t.name();
    REMOE_CHECK(!name.empty(), path, ": tensor #", i, " ", shape_str(t.shape()),
                " has an empty name (every tensor needs a unique name)");
    REMOE_CHECK(name != kMetadataKey, path, ": a tensor may not be named ", kMetadataKey);
    REMOE_CHECK(names.insert(name).second, path, ": two tensors are named '", name, "'");
    host.push_back(t.device() == Device::cpu ? t : t.to(Device::cpu));
    ojson entry = ojson::object();
    entry["dtype"] = st_dtype(t.dtype());
    entry["shape"] = t.shape();
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = std::move(entry);
    offset += t.nbytes();
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    REMOE_FAIL(path, ": cannot write the safetensors header (names and metadata must be UTF-8): ",
               e.what());
  }
  // Spaces pad the header so that the data section starts 8-byte aligned, as the reference
  // library does.
  text.append((kAlign - text.size() % kAlign) % kAlign, ' ');
  const uint64_t n = text.size();

  SyncedFile f(path);
  f.write(&n, sizeof n);
  f.write(text.data(), text.size());
  for (const Tensor& t : host) f.write(t.raw(), t.nbytes());
  f.sync_and_close();
}

namespace {

// The reader behind load_safetensors and parse_safetensors: `file_size` bytes in all, of which
// read_at(offset, dst, n) copies n bytes at offset into dst (false when the source fails).
// Nothing is read or allocated beyond what the header length and the offsets, both checked
// against `file_size`, allow.
using ReadAt = std::function<bool(uint64_t offset, void* dst, uint64_t n)>;

std::vector<Tensor> read_safetensors(const std::string& path, uint64_t file_size,
                                     const ReadAt& read_at,
                                     std::map<std::string, std::string>* metadata) {
  if (metadata) metadata->clear();
  REMOE_CHECK(file_size >= 8, path, ": file is ", file_size,
              " bytes, shorter than the 8-byte safetensors header length");
  uint64_t n = 0;
  REMOE_CHECK(read_at(0, &n, sizeof n), path, ": cannot read the header length");
  REMOE_CHECK(n <= file_size - 8, path, ": header length ", n, " is larger than the ",
              file_size - 8, " bytes that follow it");
  std::string text(n, '\0');
  REMOE_CHECK(read_at(8, text.data(), n), path, ": cannot read the ", n, "-byte header");
  const uint64_t data_start = 8 + n;
  const uint64_t data_size = file_size - data_start;

  const ojson header = parse_header(path, text);
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      REMOE_CHECK(value.is_object(), path, ": ", kMetadataKey, " is a JSON ", value.type_name(),
                  ", expected an object of strings");
      for (const auto& [mk, mv] : value.items()) {
        REMOE_CHECK(mv.is_string(), path, ": ", kMetadataKey, " value of '", mk, "' is ",
                    mv.dump(), ", expected a string");
        if (metadata) (*metadata)[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, value));
  }

  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered_to = 0, gaps = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    REMOE_CHECK(e.end <= data_size, path, ": tensor '", e.name, "' data_offsets [", e.begin,
                ", ", e.end, "] lie beyond the ", data_size, "-byte data section");
    REMOE_CHECK(e.begin >= covered_to, path, ": tensor '", e.name, "' data_offsets [", e.begin,
                ", ", e.end, "] overlap those of '", prev->name, "' [", prev->begin, ", ",
                prev->end, "]");
    gaps += e.begin - covered_to;
    covered_to = e.end;
    if (e.end > e.begin) prev = &e;
  }
  gaps += data_size - covered_to;
  REMOE_CHECK(gaps == 0, path, ": data section has ", gaps, " bytes not covered by any tensor");

  std::vector<Tensor> out;
  out.reserve(entries.size());
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.end > e.begin)
      REMOE_CHECK(read_at(data_start + e.begin, t.raw(), e.end - e.begin), path,
                  ": cannot read the data of tensor '", e.name, "'");
    t.set_name(e.name);
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

std::vector<Tensor> load_safetensors(const std::string& path,
                                     std::map<std::string, std::string>* metadata) {
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  REMOE_CHECK(!ec, path, ": cannot read safetensors file: ", ec.message());
  std::ifstream in(path, std::ios::binary);
  REMOE_CHECK(in, path, ": cannot open for reading");
  const auto read_at = [&](uint64_t offset, void* dst, uint64_t bytes) {
    in.seekg(std::streamoff(offset));
    in.read(static_cast<char*>(dst), std::streamsize(bytes));
    return bool(in);
  };
  return read_safetensors(path, file_size, read_at, metadata);
}

std::vector<Tensor> parse_safetensors(std::string_view bytes, const std::string& source,
                                      std::map<std::string, std::string>* metadata) {
  const auto read_at = [&](uint64_t offset, void* dst, uint64_t n) {
    if (offset > bytes.size() || n > bytes.size() - offset) return false;
    if (n > 0) std::memcpy(dst, bytes.data() + offset, n);
    return true;
  };
  return read_safetensors(source, bytes.size(), read_at, metadata);
}

namespace {

// The source tensor for each dst tensor, in dst's order, after checking that the two sets
// match exactly (see check_by_name).
std::vector<const Tensor*> match_by_name(const std::vector<Tensor>& dst,
                                         const std::vector<Tensor>& src, const std::string& what) {
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const Tensor& s : src) {
    REMOE_CHECK(s.defined(), what, ": has an undefined tensor");
    REMOE_CHECK(by_name.emplace(s.name(), &s).second, what, " has two tensors named '", s.name(),
                "'");
  }
  // Everything is checked before anything is copied, so a mismatch leaves dst untouched.
  std::vector<const Tensor*> sources;
  std::set<std::string> dst_names;
  for (const Tensor& d : dst) {
    REMOE_CHECK(d.defined(), what, ": the model has an undefined tensor");
    REMOE_CHECK(!d.name().empty(), what, ": the model has an unnamed tensor ",
                shape_str(d.shape()));
    REMOE_CHECK(dst_names.insert(d.name()).second, what, ": the model has two tensors named '",
                d.name(), "'");
    const auto it = by_name.find(d.name());
    REMOE_CHECK(it != by_name.end(), what, ": no tensor '", d.name(), "'");
    const Tensor& s = *it->second;
    REMOE_CHECK(s.shape() == d.shape() && s.dtype() == d.dtype(), what, ": tensor '", d.name(),
                "' is ", shape_str(s.shape()), " ", dtype_name(s.dtype()), ", the model's is ",
                shape_str(d.shape()), " ", dtype_name(d.dtype()));
    sources.push_back(&s);
  }
  for (const Tensor& s : src)
    REMOE_CHECK(dst_names.count(s.name()), what, " has tensor '", s.name(),
                "' that the model does not");
  return sources;
}

}  // namespace

void check_by_name(const std::vector<Tensor>& dst, const std::vector<Tensor>& src,
                   const std::string& what) {
  (void)match_by_name(dst, src, what);
}

void copy_by_name(const std::vector<Tensor>& dst, const std::vector<Tensor>& src,
                  const std::string& what) {
  const std::vector<const Tensor*> sources = match_by_name(dst, src, what);
  for (size_t i = 0; i < dst.size(); ++i)
    if (dst[i].nbytes() > 0)
      device::copy(dst[i].raw(), dst[i].device(), sources[i]->raw(), sources[i]->device(),
                   dst[i].nbytes());
}

namespace {

// REMOE_TEST_CHECKPOINT_DELAY_MS (testing only): when set to N > 0, save_checkpoint sleeps N ms
// after creating step_<n>.tmp/, after each file written into it and before the rename, so that
// a test can kill the process while a half-written .tmp directory exists (the kill -9 test of
// tests/e2e). Unset or 0 in any real run; a value that is not a non-negative integer is an
// error rather than silently ignored.
constexpr const char* kDelayEnv = "REMOE_TEST_CHECKPOINT_DELAY_MS";

int64_t test_delay_ms() {
  const char* text = std::getenv(kDelayEnv);
  if (!text || !*text) return 0;
  int64_t ms = -1;
  const char* end = text + std::strlen(text);
  const auto [ptr, ec] = std::from_chars(text, end, ms);
  REMOE_CHECK(ec == std::errc() && ptr == end && ms >= 0, kDelayEnv, " = '", text,
              "': expected a non-negative integer (milliseconds)");
  return ms;
}

void test_pause(int64_t ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, int64_t step,
                            const std::vector<Tensor>& model, const std::vector<Tensor>& optimizer,
                            const nlohmann::json& state) {
  REMOE_CHECK(step >= 0, "save_checkpoint: step ", step, " is negative");
  REMOE_CHECK(state.is_object() || state.is_null(), "save_checkpoint: state is a JSON ",
              state.type_name(), ", expected an object");
  const fs::path ckpt_dir = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = ckpt_dir / step_dir_name(step);
  const fs::path tmp_dir = ckpt_dir / (step_dir_name(step) + ".tmp");
  const int64_t delay_ms = test_delay_ms();
  try {
    if (!fs::is_directory(ckpt_dir)) {
      fs::create_directories(ckpt_dir);
      fsync_dir(ckpt_dir.parent_path());
    }
    fs::remove_all(tmp_dir);
    fs::create_directory(tmp_dir);

    test_pause(delay_ms);
    save_safetensors((tmp_dir / "model.safetensors").string(), model);
    test_pause(delay_ms);
    save_safetensors((tmp_dir / "optimizer.safetensors").string(), optimizer);
    test_pause(delay_ms);
    nlohmann::json s = state.is_null() ? nlohmann::json::object() : state;
    s["step"] = step;
    write_file_synced((tmp_dir / "state.json").string(), s.dump(2) + "\n");
    fsync_dir(tmp_dir);
    test_pause(delay_ms);

    if (fs::exists(final_dir)) {
      // Unmark it first: a crash part-way through the removal must not leave a "complete" dir
      // with files missing.
      if (fs::remove(final_dir / kComplete)) fsync_dir(final_dir);
      fs::remove_all(final_dir);
    }
    fs::rename(tmp_dir, final_dir);
    fsync_dir(ckpt_dir);
    write_file_synced((final_dir / kComplete).string(), "");
    fsync_dir(final_dir);
  } catch (const fs::filesystem_error& e) {
    REMOE_FAIL("save_checkpoint to ", final_dir.string(), ": ", e.what());
  } catch (const nlohmann::json::exception& e) {
    REMOE_FAIL("save_checkpoint to ", final_dir.string(), ": cannot write state.json: ", e.what());
  }
  return final_dir.string();
}

Checkpoint load_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  REMOE_CHECK(fs::is_directory(d, ec), dir, ": checkpoint directory does not exist");
  REMOE_CHECK(fs::is_regular_file(d / kComplete, ec), dir,
              ": incomplete checkpoint (no COMPLETE file; it was not finished writing)");
  Checkpoint c;
  c.dir = dir;
  c.model = load_safetensors((d / "model.safetensors").string());
  c.optimizer = load_safetensors((d / "optimizer.safetensors").string());
  const std::string state_path = (d / "state.json").string();
  try {
    c.state = nlohmann::json::parse(read_text_file(state_path));
  } catch (const nlohmann::json::exception& e) {
    REMOE_FAIL(state_path, ": not valid JSON: ", e.what());
  }
  REMOE_CHECK(c.state.is_object(), state_path, ": is a JSON ", c.state.type_name(),
              ", expected an object");
  REMOE_CHECK(c.state.contains("step"), state_path, ": has no \"step\"");
  const auto step = json_index(c.state["step"]);
  REMOE_CHECK(step, state_path, ": \"step\" is ", c.state["step"].dump(),
              ", expected a non-negative integer");
  c.step = *step;
  const auto named = parse_step_dir_name(d.filename().string());
  REMOE_CHECK(!named || *named == c.step, state_path, ": \"step\" is ", c.step,
              " but the directory is for step ", *named);
  return c;
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const fs::path ckpt_dir = fs::path(run_dir) / "checkpoints";
  std::optional<std::pair<int64_t, fs::path>> best;
  try {
    if (!fs::exists(ckpt_dir)) return std::nullopt;
    REMOE_CHECK(fs::is_directory(ckpt_dir), ckpt_dir.string(), ": is not a directory");
    for (const fs::directory_entry& e : fs::directory_iterator(ckpt_dir)) {
      if (!e.is_directory()) continue;
      const auto step = parse_step_dir_name(e.path().filename().string());
      if (!step || !fs::is_regular_file(e.path() / kComplete)) continue;
      if (!best || *step > best->first) best.emplace(*step, e.path());
    }
  } catch (const fs::filesystem_error& e) {
    REMOE_FAIL("latest_checkpoint in ", ckpt_dir.string(), ": ", e.what());
  }
  if (!best) return std::nullopt;
  return best->second.string();
}

std::vector<std::string> prune_checkpoints(const std::string& run_dir, int64_t keep_last,
                                           int64_t keep_every) {
  REMOE_CHECK(keep_last >= 1, "prune_checkpoints: keep_last must be at least 1, got ", keep_last);
  REMOE_CHECK(keep_every >= 0, "prune_checkpoints: keep_every must be >= 0, got ", keep_every);
  const fs::path ckpt_dir = fs::path(run_dir) / "checkpoints";
  std::vector<std::string> removed;
  try {
    if (!fs::is_directory(ckpt_dir)) return removed;
    std::vector<std::pair<int64_t, fs::path>> complete;
    std::vector<fs::path> unfinished;
    for (const fs::directory_entry& e : fs::directory_iterator(ckpt_dir)) {
      if (!e.is_directory()) continue;
      const std::string name = e.path().filename().string();
      // A .tmp dir is a save that never reached its rename, and a step dir without COMPLETE
      // one that never got marked: with one writer per run directory (and its save finished),
      // both are leftovers of a crash that nothing will ever read.
      constexpr std::string_view kTmp = ".tmp";
      const bool tmp = name.size() > kTmp.size() && name.ends_with(kTmp) &&
                       parse_step_dir_name(name.substr(0, name.size() - kTmp.size()));
      const auto step = parse_step_dir_name(name);
      if (tmp || (step && !fs::exists(e.path() / kComplete))) unfinished.push_back(e.path());
      else if (step) complete.emplace_back(*step, e.path());
    }
    std::sort(complete.begin(), complete.end(), [](const auto& a, const auto& b) {
      return a.first > b.first;
    });
    for (size_t i = size_t(std::min<int64_t>(keep_last, int64_t(complete.size())));
         i < complete.size(); ++i) {
      const auto& [step, path] = complete[i];
      if (keep_every > 0 && step % keep_every == 0) continue;
      // Unmarked first, as in save_checkpoint: a crash part-way through the removal leaves an
      // incomplete directory, never a "complete" one with files missing.
      fs::remove(path / kComplete);
      fsync_dir(path);
      fs::remove_all(path);
      removed.push_back(path.string());
    }
    for (const fs::path& path : unfinished) {
      fs::remove_all(path);
      removed.push_back(path.string());
    }
    if (!removed.empty()) fsync_dir(ckpt_dir);
  } catch (const fs::filesystem_error& e) {
    REMOE_FAIL("prune_checkpoints in ", ckpt_dir.string(), ": ", e.what());
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

}  // namespace remoe::train
