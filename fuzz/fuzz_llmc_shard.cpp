// open_llmc_shard on arbitrary bytes as one shard file. An accepted shard is exactly its
// 1024-byte header plus the tokens it announces, all readable.
#include <cstring>

#include "fuzz/fuzz_token_files.h"
#include "kernels/check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace remoe;
  const std::string path = fuzz::write_file("shard.bin", fuzz::as_text(data, size));
  train::TokenSource source;
  try {
    source = train::open_llmc_shard(path);
  } catch (const Error&) {
    return 0;  // refused, as hostile input should be
  }
  int32_t magic = 0;
  std::memcpy(&magic, data, sizeof magic);  // accepted: size ≥ 1024
  const int64_t token_size = magic == 20240520 ? 2 : 4;
  fuzz::check_source(source, (int64_t(size) - 1024) / token_size);
  return 0;
}
