// Hash routing (Roller et al. 2021, "Hash Layers"): a fixed hash of the token id picks the
// experts; nothing is learned. With h = splitmix64(id) (the finaliser of Vigna's splitmix64,
// below), token t goes to experts (h mod E + i) mod E for i = 0..k−1, each with gate 1/k
// (gate 1 for k = 1). The same id always gets the same experts, wherever it stands.
//
// ids: (T) i32; gates: (T, E); stats as in router.h (score_sums = Σ_t gates[t, e]).
// No backward: the gates are constants.
#pragma once

#include <cstdint>

#include "kernels/router.h"

namespace remoe::cpu {

// splitmix64's output function of x + golden ratio: a fixed, well-mixed 64-bit hash.
constexpr uint64_t hash_token(uint64_t id) {
  uint64_t z = id + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <typename T>
void hash_router_forward(T* gates, RouterStats<T> stats, const int32_t* ids, int64_t n_tokens,
                         int64_t n_experts, int k);

}  // namespace remoe::cpu

// CUDA launcher (kernels/cuda/hash_router.cu), f32 and f64: the same contract on device
// pointers, the same bits (the gate 1/k is computed on the host in T). Needs 1 ≤ k ≤ E, which
// the op layer checks too.
namespace remoe::cuda {

template <typename T>
void hash_router_forward(T* gates, RouterStats<T> stats, const int32_t* ids, int64_t n_tokens,
                         int64_t n_experts, int k, cudaStream_t stream);

}  // namespace remoe::cuda
