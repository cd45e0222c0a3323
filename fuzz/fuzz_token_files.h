// What the llm.c and Megatron targets share: the readers map files, so the input is written to
// files first (in a per-process scratch directory), and an accepted source must hold exactly the
// tokens its header describes, all readable and within [0, max_token()].
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "train/token_source.h"

namespace remoe::fuzz {

inline std::filesystem::path scratch_dir() {
  static const std::filesystem::path dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("remoe_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, std::string_view bytes) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

inline void check_source(const train::TokenSource& source, int64_t expected_tokens) {
  if (source.size() != expected_tokens)
    finding("accepted a source of " + std::to_string(source.size()) + " tokens whose files hold " +
            std::to_string(expected_tokens));
  std::vector<int32_t> tokens(static_cast<size_t>(source.size()));
  if (!tokens.empty()) source.read(0, source.size(), tokens.data());
  for (int32_t t : tokens)
    if (t < 0 || t > source.max_token()) finding("read a token outside [0, max_token()]: " + std::to_string(t));
}

}  // namespace remoe::fuzz
