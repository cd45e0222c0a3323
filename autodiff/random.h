// Deterministic random numbers on the host: xoshiro256** seeded through splitmix64, normals by
// Box-Muller. The whole state is four words, so a checkpoint can save and restore it.
#pragma once

#include <array>
#include <cstdint>

#include "autodiff/tensor.h"

namespace remoe {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0);

  uint64_t next_u64();
  double uniform();  // [0, 1)
  double normal();   // N(0, 1)
  int64_t below(int64_t n);  // uniform integer in [0, n)

  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_;
};

// CPU tensors of f32 or f64 filled from `rng`, element by element in order.
Tensor randn(const Shape& shape, DType dtype, Rng& rng, double std = 1.0);
Tensor rand_uniform(const Shape& shape, DType dtype, Rng& rng, double lo, double hi);

}  // namespace remoe
