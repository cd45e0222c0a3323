#include "train/token_source.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string_view>
#include <system_error>

#include "kernels/check.h"

namespace remoe::train {

// Every format here is little-endian and read with plain loads.
static_assert(std::endian::native == std::endian::little, "token readers assume little-endian");

// A whole file mapped read-only; unmapped when the last TokenSource using it goes.
class MappedFile {
 public:
  // `what` says what the file should be ("an llm.c token shard") in the errors.
  MappedFile(const std::string& path, std::string_view what) : path_(path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    REMOE_CHECK(!ec || ec == std::errc::no_such_file_or_directory,
                "data: cannot inspect '", path, "': ", ec.message());
    REMOE_CHECK(fs::exists(st), "data: no such file '", path, "' (expected ", what, ")");
    REMOE_CHECK(!fs::is_directory(st), "data: '", path, "' is a directory, expected ", what);
    // A FIFO or device would block or never end.
    REMOE_CHECK(fs::is_regular_file(st), "data: '", path, "' is not a regular file (expected ",
                what, ")");
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    REMOE_CHECK(fd >= 0, "data: cannot read '", path, "' (cannot open it: ", std::strerror(errno),
                ")");
    struct stat s {};
    if (::fstat(fd, &s) != 0) {
      const int err = errno;
      ::close(fd);
      REMOE_FAIL("data: cannot read '", path, "' (fstat: ", std::strerror(err), ")");
    }
    size_ = int64_t(s.st_size);
    if (size_ > 0) {  // mmap refuses length 0
      void* p = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);  // the mapping stays valid without the descriptor
      REMOE_CHECK(p != MAP_FAILED, "data: cannot memory-map '", path, "' (", size_,
                  " bytes): ", std::strerror(err));
      data_ = static_cast<const uint8_t*>(p);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_t(size_));
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

namespace {

using Type = TokenType;

constexpr int32_t kLlmcMagicU16 = 20240520;
constexpr int32_t kLlmcMagicU32 = 20240801;
constexpr int64_t kLlmcHeaderBytes = 256 * 4;

constexpr std::string_view kMegatronMagic{"MMIDIDX\0\0", 9};
constexpr int64_t kMegatronHeaderBytes = 34;  // magic 9, version 8, dtype 1, counts 8 + 8

int64_t size_of(Type t) {
  switch (t) {
    case Type::u8: case Type::i8: return 1;
    case Type::i16: case Type::u16: return 2;
    case Type::i32: case Type::u32: return 4;
    case Type::i64: return 8;
  }
  return 1;
}

const char* name_of(Type t) {
  switch (t) {
    case Type::u8: return "uint8";
    case Type::i8: return "int8";
    case Type::i16: return "int16";
    case Type::u16: return "uint16";
    case Type::i32: return "int32";
    case Type::u32: return "uint32";
    case Type::i64: return "int64";
  }
  return "?";
}

// An unaligned little-endian load (the .idx arrays start at byte 34).
template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void decode(const uint8_t* p, int64_t n, int32_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = int32_t(load<T>(p + i * int64_t(sizeof(T))));
}

// Dispatches `f.template operator()<T>()` on the token type.
template <typename F>
void with_type(Type t, F&& f) {
  switch (t) {
    case Type::u8: f.template operator()<uint8_t>(); break;
    case Type::i8: f.template operator()<int8_t>(); break;
    case Type::i16: f.template operator()<int16_t>(); break;
    case Type::u16: f.template operator()<uint16_t>(); break;
    case Type::i32: f.template operator()<int32_t>(); break;
    case Type::u32: f.template operator()<uint32_t>(); break;
    case Type::i64: f.template operator()<int64_t>(); break;
  }
}

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

// What a file that is not the expected format looks like, for the hint after a bad magic.
std::string format_hint(const uint8_t* d, int64_t size) {
  if (size >= 9 && std::string_view(reinterpret_cast<const char*>(d), 9) == kMegatronMagic)
    return "; this is a Megatron index: use data.format = \"megatron\"";
  const int64_t n = std::min<int64_t>(size, 64);
  const bool text = n > 0 && std::all_of(d, d + n, [](uint8_t b) {
                      return (b >= 0x20 && b < 0x7f) || b == '\n' || b == '\r' || b == '\t';
                    });
  return text ? "; it begins like text: use data.format = \"text\"" : "";
}

}  // namespace

// Appends pieces, scanning each once: ids outside [0, 2^31) are errors, the maximum is kept.
struct SourceBuilder {
  TokenSource s;

  explicit SourceBuilder(std::string name) { s.name_ = std::move(name); }

  void add(std::shared_ptr<const MappedFile> file, int64_t byte_offset, int64_t n, Type type) {
    const uint8_t* p = file->data() + byte_offset;
    const int64_t size = size_of(type);
    int64_t max = -1, at = -1;
    with_type(type, [&]<typename T>() {
      for (int64_t i = 0; i < n; ++i) {
        const T v = load<T>(p + i * size);
        bool bad = false;
        if constexpr (std::is_signed_v<T>) bad = v < 0;
        if constexpr (sizeof(T) > 4 || (sizeof(T) == 4 && std::is_unsigned_v<T>))
          bad = bad || int64_t(v) > int64_t(std::numeric_limits<int32_t>::max());
        if (bad)
          REMOE_FAIL("data: '", file->path(), "' token ", i, " (byte offset ",
                     byte_offset + i * size, ") is ", int64_t(v), " (", name_of(type),
                     "): token ids must be in [0, 2^31)");
        if (int64_t(v) > max) max = int64_t(v), at = i;
      }
    });
    if (max > s.max_token_) s.max_token_ = max, s.max_token_offset_ = s.size_ + at;
    s.pieces_.push_back({std::move(file), byte_offset, s.size_, n, type});
    s.size_ += n;
  }

  // Another source's pieces after these (already scanned).
  void append(const TokenSource& other) {
    for (TokenSource::Piece p : other.pieces_) {
      p.begin += s.size_;
      s.pieces_.push_back(std::move(p));
    }
    if (other.max_token_ > s.max_token_)
      s.max_token_ = other.max_token_, s.max_token_offset_ = s.size_ + other.max_token_offset_;
    s.size_ += other.size_;
  }

  void set_document_starts(std::vector<int64_t> starts) {
    s.document_starts_ = std::make_shared<const std::vector<int64_t>>(std::move(starts));
  }

  TokenSource finish() { return std::move(s); }
};

void TokenSource::read(int64_t offset, int64_t n, int32_t* out) const {
  REMOE_CHECK(offset >= 0 && n >= 0 && n <= size_ - offset, "data: '", name_, "': tokens [",
              offset, ", ", offset + n, ") are not inside its ", size_, " tokens");
  // The last piece starting at or before `offset` (empty pieces before it are skipped).
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), offset,
                             [](int64_t o, const Piece& p) { return o < p.begin; });
  for (--it; n > 0; ++it) {
    const int64_t k = std::min(n, it->begin + it->n - offset);
    const uint8_t* p =
        it->file->data() + it->byte_offset + (offset - it->begin) * size_of(it->type);
    with_type(it->type, [&]<typename T>() { decode<T>(p, k, out); });
    out += k, offset += k, n -= k;
  }
}

const std::vector<int64_t>& TokenSource::document_starts() const {
  static const std::vector<int64_t> kNone;
  return document_starts_ ? *document_starts_ : kNone;
}

std::string TokenSource::where(int64_t offset) const {
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), offset,
                             [](int64_t o, const Piece& p) { return o < p.begin; });
  if (offset < 0 || offset >= size_ || it == pieces_.begin())
    return str_cat("'", name_, "' token ", offset);
  --it;
  const int64_t k = offset - it->begin;
  return str_cat("'", it->file->path(), "' token ", k, " (byte offset ",
                 it->byte_offset + k * size_of(it->type), ")");
}

TokenSource open_text(const std::string& path) {
  REMOE_CHECK(!path.ends_with(".xz"), "data: '", path,
              "' is xz-compressed; compressed corpora are not read yet: decompress it with ",
              "`xz -dk ", path, "` and use '", path.substr(0, path.size() - 3), "'");
  auto file = std::make_shared<const MappedFile>(path, "a text file");
  REMOE_CHECK(file->size() > 0, "data: '", path, "' is empty (0 bytes)");
  SourceBuilder b(path);
  b.add(file, 0, file->size(), Type::u8);
  return b.finish();
}

TokenSource open_llmc_shard(const std::string& path) {
  auto file = std::make_shared<const MappedFile>(path, "an llm.c token shard");
  const uint8_t* d = file->data();
  const int64_t size = file->size();
  REMOE_CHECK(size >= kLlmcHeaderBytes, "data: '", path, "' is ", size,
              " bytes, shorter than the ", kLlmcHeaderBytes,
              "-byte header of an llm.c token shard (256 int32)");
  const int32_t magic = load<int32_t>(d), version = load<int32_t>(d + 4),
                count = load<int32_t>(d + 8);
  Type type = Type::u16;
  if (magic == kLlmcMagicU16) {
    REMOE_CHECK(version == 1, "data: '", path, "': llm.c version (byte offset 4) is ", version,
                ", expected 1 for magic ", kLlmcMagicU16);
  } else if (magic == kLlmcMagicU32) {
    type = Type::u32;
    REMOE_CHECK(version == 7 || version == 1, "data: '", path,
                "': llm.c version (byte offset 4) is ", version, ", expected 7 (or 1) for magic ",
                kLlmcMagicU32);
  } else {
    REMOE_FAIL("data: '", path, "': magic (byte offset 0) is ", magic, ", expected ",
               kLlmcMagicU16, " (llm.c shard, uint16 tokens) or ", kLlmcMagicU32,
               " (uint32 tokens)", format_hint(d, size));
  }
  REMOE_CHECK(count >= 0, "data: '", path, "': token count (byte offset 8) is ", count,
              ", expected >= 0");
  const int64_t expected = kLlmcHeaderBytes + int64_t(count) * size_of(type);
  REMOE_CHECK(size == expected, "data: '", path, "' is ", size, " bytes, but its header counts ",
              count, " ", name_of(type), " tokens (byte offset 8): expected ", kLlmcHeaderBytes,
              " + ", count, " * ", size_of(type), " = ", expected, " bytes",
              size < expected ? " (the file is truncated)"
                              : str_cat(" (", size - expected, " bytes after the last token)"));
  SourceBuilder b(path);
  b.add(file, kLlmcHeaderBytes, count, type);
  return b.finish();
}

TokenSource open_llmc(const std::string& pattern) {
  std::vector<std::string> paths;
  if (!has_glob_chars(pattern)) {
    paths.push_back(pattern);
  } else {
    glob_t g{};
    const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    REMOE_CHECK(rc == 0 || rc == GLOB_NOMATCH, "data: cannot expand the pattern '", pattern,
                "' (glob error ", rc, ")");
    REMOE_CHECK(!paths.empty(), "data: no file matches the pattern '", pattern, "'");
    std::sort(paths.begin(), paths.end());  // byte order, whatever the locale
  }
  SourceBuilder b(pattern);
  for (const std::string& path : paths) {
    b.append(open_llmc_shard(path));
  }
  REMOE_CHECK(b.s.size() > 0, "data: '", pattern, "' holds no tokens (", paths.size(),
              " llm.c shard", paths.size() == 1 ? "" : "s", " of 0 tokens)");
  return b.finish();
}

TokenSource open_megatron(const std::string& path) {
  const std::string prefix =
      path.ends_with(".bin") || path.ends_with(".idx") ? path.substr(0, path.size() - 4) : path;
  const std::string idx_path = prefix + ".idx", bin_path = prefix + ".bin";
  auto idx = std::make_shared<const MappedFile>(idx_path, "a Megatron index (prefix.idx)");
  auto bin = std::make_shared<const MappedFile>(bin_path, "a Megatron data file (prefix.bin)");
  const uint8_t* d = idx->data();
  const int64_t idx_size = idx->size(), bin_size = bin->size();
  const auto where = [&](int64_t offset) {
    return str_cat("'", idx_path, "' byte offset ", offset);
  };

  REMOE_CHECK(idx_size >= kMegatronHeaderBytes, "data: '", idx_path, "' is ", idx_size,
              " bytes, shorter than the ", kMegatronHeaderBytes, "-byte Megatron index header");
  REMOE_CHECK(std::string_view(reinterpret_cast<const char*>(d), 9) == kMegatronMagic, "data: ",
              where(0), ": magic is not \"MMIDIDX\\x00\\x00\" (not a Megatron index)");
  const uint64_t version = load<uint64_t>(d + 9);
  REMOE_CHECK(version == 1, "data: ", where(9), ": version is ", version, ", expected 1");
  const uint8_t code = d[17];
  Type type = Type::u8;
  switch (code) {
    case 1: type = Type::u8; break;
    case 2: type = Type::i8; break;
    case 3: type = Type::i16; break;
    case 4: type = Type::i32; break;
    case 5: type = Type::i64; break;
    case 8: type = Type::u16; break;
    case 6: case 7:
      REMOE_FAIL("data: ", where(17), ": dtype code ", int(code), " (",
                 code == 6 ? "float64" : "float32", ") is not an integer type; token ids need ",
                 "1 uint8, 2 int8, 3 int16, 4 int32, 5 int64 or 8 uint16");
    default:
      REMOE_FAIL("data: ", where(17), ": dtype code ", int(code),
                 " is not a Megatron dtype; expected 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64 ",
                 "or 8 uint16");
  }
  const int64_t size = size_of(type);

  // Counts are checked against the file before any product is formed, so nothing overflows.
  const uint64_t n_seq = load<uint64_t>(d + 18), n_doc = load<uint64_t>(d + 26);
  const uint64_t room = uint64_t(idx_size - kMegatronHeaderBytes);
  REMOE_CHECK(n_seq <= room / 12 && n_doc <= (room - 12 * n_seq) / 8, "data: '", idx_path,
              "' is ", idx_size, " bytes, too short for the ", n_seq, " sequences (byte offset 18)",
              " and ", n_doc, " document indices (byte offset 26) its header counts");
  const int64_t S = int64_t(n_seq), D = int64_t(n_doc);
  const int64_t lengths_at = kMegatronHeaderBytes, pointers_at = lengths_at + 4 * S,
                docs_at = pointers_at + 8 * S, end_at = docs_at + 8 * D;
  REMOE_CHECK(idx_size == end_at || idx_size == end_at + S, "data: '", idx_path, "' is ",
              idx_size, " bytes, but its header counts ", S, " sequences and ", D,
              " document indices: expected 34 + 12 * ", S, " + 8 * ", D, " = ", end_at,
              " bytes (or ", end_at + S, " with sequence modes)");

  // Sequences back to back from byte 0: pointer[i] is the running sum of the lengths before it.
  int64_t expected_pointer = 0;
  for (int64_t i = 0; i < S; ++i) {
    const int64_t at = lengths_at + 4 * i, pat = pointers_at + 8 * i;
    const int32_t length = load<int32_t>(d + at);
    const int64_t pointer = load<int64_t>(d + pat);
    REMOE_CHECK(length >= 0, "data: ", where(at), ": sequence ", i, " has length ", length,
                ", expected >= 0");
    REMOE_CHECK(pointer >= 0 && pointer <= bin_size, "data: ", where(pat), ": sequence ", i,
                " pointer is ", pointer, ", past the end of '", bin_path, "' (", bin_size,
                " bytes)");
    REMOE_CHECK(pointer == expected_pointer, "data: ", where(pat), ": sequence ", i,
                " pointer is ", pointer, ", expected ", expected_pointer,
                " (the end of the sequence before it: sequences are stored back to back)");
    REMOE_CHECK(int64_t(length) * size <= bin_size - pointer, "data: ", where(at), ": sequence ",
                i, " of ", length, " ", name_of(type), " tokens at byte ", pointer,
                " runs past the end of '", bin_path, "' (", bin_size, " bytes)");
    expected_pointer = pointer + int64_t(length) * size;
  }
  REMOE_CHECK(expected_pointer == bin_size, "data: '", bin_path, "' is ", bin_size,
              " bytes, but the sequence lengths in '", idx_path, "' add up to ",
              expected_pointer / size, " ", name_of(type), " tokens = ", expected_pointer,
              " bytes");

  // Document indices: 0 first, S last, never decreasing. Document d starts at the token offset
  // of its first sequence, pointer[idx[d]] / size (the end of the data when idx[d] = S).
  REMOE_CHECK(D >= 1, "data: ", where(26), ": 0 document indices, expected at least 1 (0, then",
              " the end of each document)");
  std::vector<int64_t> starts;
  int64_t previous = 0;
  for (int64_t k = 0; k < D; ++k) {
    const int64_t at = docs_at + 8 * k;
    const int64_t seq = load<int64_t>(d + at);
    REMOE_CHECK(k > 0 || seq == 0, "data: ", where(at), ": document index 0 is ", seq,
                ", expected 0");
    REMOE_CHECK(seq >= previous && seq <= S, "data: ", where(at), ": document index ", k, " is ",
                seq, ", expected a sequence index in [", previous, ", ", S,
                "] (document indices never decrease and end at the sequence count)");
    REMOE_CHECK(k < D - 1 || seq == S, "data: ", where(at), ": the last document index is ", seq,
                ", expected the sequence count ", S);
    const int64_t token = seq < S ? load<int64_t>(d + pointers_at + 8 * seq) / size
                                  : bin_size / size;
    if (k < D - 1 && (starts.empty() || token > starts.back())) starts.push_back(token);
    previous = seq;
  }

  const int64_t n_tokens = bin_size / size;
  REMOE_CHECK(n_tokens > 0, "data: Megatron dataset '", prefix, "' holds no tokens");
  // Empty documents at the end would start at n_tokens; they hold no window.
  while (!starts.empty() && starts.back() >= n_tokens) starts.pop_back();
  SourceBuilder b(path);
  b.add(bin, 0, n_tokens, type);
  b.set_document_starts(std::move(starts));
  return b.finish();
}

TokenSource open_tokens(DataFormat format, const std::string& path) {
  switch (format) {
    case DataFormat::text: return open_text(path);
    case DataFormat::llmc: return open_llmc(path);
    case DataFormat::megatron: return open_megatron(path);
  }
  REMOE_FAIL("data: unknown format ", int(format));
}

}  // namespace remoe::train
