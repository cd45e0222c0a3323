// bf16 on the host: the storage type of bf16 tensors (same bits as CUDA's __nv_bfloat16).
// The CPU reference computes in f32/f64; bf16 exists on the CPU only to be cast.
#pragma once

#include <bit>
#include <cstdint>

namespace remoe {

struct bf16 {
  uint16_t bits = 0;
};

inline float bf16_to_float(bf16 x) { return std::bit_cast<float>(uint32_t(x.bits) << 16); }

// Round to nearest, ties to even; NaN stays NaN (quiet).
inline bf16 float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) return bf16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

}  // namespace remoe
