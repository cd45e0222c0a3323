// open_megatron on arbitrary bytes split into an index and a data file: the first 4 bytes
// (little-endian) give the length of prefix.idx, the rest after it is prefix.bin. An accepted
// dataset holds every token of its .bin, all readable.
#include <algorithm>
#include <cstring>

#include "fuzz/fuzz_token_files.h"
#include "kernels/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace remoe;
  if (size < 4) return 0;
  uint32_t idx_size = 0;
  std::memcpy(&idx_size, data, sizeof idx_size);
  const std::string_view rest = fuzz::as_text(data + 4, size - 4);
  const std::string_view idx = rest.substr(0, std::min<size_t>(idx_size, rest.size()));
  const std::string_view bin = rest.substr(idx.size());
  fuzz::write_file("data.idx", idx);
  fuzz::write_file("data.bin", bin);
  train::TokenSource source;
  try {
    source = train::open_megatron((fuzz::scratch_dir() / "data").string());
  } catch (const Error&) {
    return 0;
  }
  // The dtype code at byte 17 of the index: 1, 2 → 1 byte; 3, 8 → 2; 4 → 4; 5 → 8.
  const int code = static_cast<unsigned char>(idx[17]);
  const int64_t token_size = code <= 2 ? 1 : (code == 3 || code == 8) ? 2 : code == 4 ? 4 : 8;
  fuzz::check_source(source, int64_t(bin.size()) / token_size);
  return 0;
}
