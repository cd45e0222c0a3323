// parse_safetensors (the reader behind load_safetensors) on arbitrary bytes as a whole file. A
// file that loads must be fully accounted for: uniquely named tensors whose bytes, together,
// are exactly the data section after the header.
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "kernels/check.h"
#include "train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace remoe;
  const std::string_view bytes = fuzz::as_text(data, size);
  std::map<std::string, std::string> metadata;
  std::vector<Tensor> tensors;
  try {
    tensors = train::parse_safetensors(bytes, "fuzz.safetensors", &metadata);
  } catch (const Error&) {
    return 0;  // refused, as hostile input should be
  }

  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data(), sizeof header_bytes);  // accepted: size >= 8
  uint64_t tensor_bytes = 0;
  std::set<std::string> names;
  for (const Tensor& t : tensors) {
    if (t.name().empty() || !names.insert(t.name()).second)
      fuzz::finding("accepted a file with an empty or repeated tensor name '" + t.name() + "'");
    if (shape_numel(t.shape()) < 0) fuzz::finding("tensor '" + t.name() + "' has a negative size");
    tensor_bytes += t.nbytes();
  }
  if (8 + header_bytes + tensor_bytes != size)
    fuzz::finding("accepted a " + std::to_string(size) + "-byte file whose " +
                  std::to_string(header_bytes) + "-byte header and " +
                  std::to_string(tensor_bytes) + " bytes of tensors do not add up to it");
  return 0;
}
