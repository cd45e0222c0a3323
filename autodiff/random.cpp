#include "autodiff/random.h"

#include <cmath>
#include <numbers>

namespace remoe {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

template <typename Gen>
Tensor fill_with(const Shape& shape, DType dtype, Gen&& gen) {
  Tensor t = Tensor::empty(shape, dtype);
  const int64_t n = t.numel();
  if (dtype == DType::f32) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < n; ++i) p[i] = float(gen());
  } else if (dtype == DType::f64) {
    double* p = t.data<double>();
    for (int64_t i = 0; i < n; ++i) p[i] = gen();
  } else {
    REMOE_FAIL("random tensors are f32 or f64, asked for ", dtype_name(dtype));
  }
  return t;
}

}  // namespace

Rng::Rng(uint64_t seed) {
  for (uint64_t& w : s_) w = splitmix64(seed);
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  // NOTE: one normal per call (the second Box-Muller value is dropped) keeps the state a pure
  // function of the number of calls, which makes save/restore trivial.
  const double u1 = 1.0 - uniform();  // (0, 1]
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

int64_t Rng::below(int64_t n) {
  REMOE_CHECK(n > 0, "Rng::below: n must be positive, got ", n);
  return int64_t(next_u64() % uint64_t(n));
}

Tensor randn(const Shape& shape, DType dtype, Rng& rng, double std) {
  return fill_with(shape, dtype, [&] { return std * rng.normal(); });
}

Tensor rand_uniform(const Shape& shape, DType dtype, Rng& rng, double lo, double hi) {
  return fill_with(shape, dtype, [&] { return lo + (hi - lo) * rng.uniform(); });
}

}  // namespace remoe
