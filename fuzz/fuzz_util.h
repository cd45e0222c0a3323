// What the libFuzzer targets share. The contract of every target: hostile input may only be
// refused with remoe::Error. Anything else is a finding: a crash or a sanitizer report, an
// exception of another type (it escapes LLVMFuzzerTestOneInput and aborts), or a broken
// property of an accepted input, reported through finding().
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace remoe::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Splits at NUL bytes into at most max_parts parts; the last part keeps any further NULs.
inline std::vector<std::string_view> split_at_nul(std::string_view text, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t nul = text.find('\0');
    if (nul == std::string_view::npos) break;
    parts.push_back(text.substr(0, nul));
    text.remove_prefix(nul + 1);
  }
  parts.push_back(text);
  return parts;
}

// An accepted input broke a property the rest of the program relies on: libFuzzer saves the
// input when the process aborts.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "FINDING: %s\n", what.c_str());
  std::abort();
}

}  // namespace remoe::fuzz
