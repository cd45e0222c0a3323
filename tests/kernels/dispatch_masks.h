// Routing masks shared by the dispatch tests (permute, grouped_matmul, combine): the edge
// patterns a dropless dispatch must survive, named so a failing TEST_P says which one broke.
#pragma once

#include <string>
#include <vector>

#include "tests/test_util.h"

namespace remoe::test {

enum class MaskKind {
  kRandom,       // each pair active with probability 1/2
  kDense,        // every pair active (ReMoE's Stage I)
  kEmptyExpert,  // random, with expert E/2 never chosen
  kAllOnOne,     // every token on the last expert, the rest empty
  kIdleTokens,   // random, with the first and last token routed nowhere
  kOneRowEach,   // token t on expert t mod E only: one-row groups when T = E
};

inline const char* kind_name(MaskKind k) {
  switch (k) {
    case MaskKind::kRandom: return "Random";
    case MaskKind::kDense: return "Dense";
    case MaskKind::kEmptyExpert: return "EmptyExpert";
    case MaskKind::kAllOnOne: return "AllOnOne";
    case MaskKind::kIdleTokens: return "IdleTokens";
    case MaskKind::kOneRowEach: return "OneRowEach";
  }
  return "?";
}

// One dispatch shape: T tokens, E experts, feature sizes d_in (x) and d_out (expert output).
struct DispatchCase {
  int64_t T, E, d_in, d_out;
  MaskKind kind;
};

inline std::string case_name(const ::testing::TestParamInfo<DispatchCase>& info) {
  const DispatchCase& c = info.param;
  return std::string(kind_name(c.kind)) + "_T" + std::to_string(c.T) + "_E" +
         std::to_string(c.E) + "_d" + std::to_string(c.d_in) + "x" + std::to_string(c.d_out);
}

// The edges the dispatch ops are held to: one token, E = 1, empty experts, every token on one
// expert, tokens with no expert, one-row groups, sizes that are not powers of two.
inline const std::vector<DispatchCase>& dispatch_cases() {
  static const std::vector<DispatchCase> cases = {
      {1, 4, 3, 2, MaskKind::kRandom},      {1, 1, 5, 3, MaskKind::kDense},
      {7, 1, 3, 2, MaskKind::kRandom},      {6, 5, 3, 4, MaskKind::kEmptyExpert},
      {5, 3, 4, 3, MaskKind::kAllOnOne},    {9, 4, 3, 5, MaskKind::kIdleTokens},
      {5, 5, 3, 2, MaskKind::kOneRowEach},  {13, 6, 5, 3, MaskKind::kRandom},
      {4, 3, 2, 3, MaskKind::kDense},
  };
  return cases;
}

inline std::vector<int32_t> make_mask_values(int64_t T, int64_t E, MaskKind kind, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> m(size_t(T * E), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      int32_t v = rng.uniform() < 0.5 ? 1 : 0;
      switch (kind) {
        case MaskKind::kRandom: break;
        case MaskKind::kDense: v = 1; break;
        case MaskKind::kEmptyExpert: v = e == E / 2 ? 0 : v; break;
        case MaskKind::kAllOnOne: v = e == E - 1 ? 1 : 0; break;
        case MaskKind::kIdleTokens: v = (t == 0 || t == T - 1) ? 0 : v; break;
        case MaskKind::kOneRowEach: v = e == t % E ? 1 : 0; break;
      }
      m[size_t(t * E + e)] = v;
    }
  // A check over no routed row checks nothing: keep at least one active pair.
  bool any = false;
  for (int32_t v : m) any = any || v != 0;
  if (!any) m[size_t((T - 1) / 2 * E)] = 1;
  return m;
}

inline Tensor make_mask(const DispatchCase& c, uint64_t seed) {
  return Tensor::from_vector<int32_t>({c.T, c.E}, make_mask_values(c.T, c.E, c.kind, seed));
}

// Gates for the active pairs, |g| in [0.5, 1.5] with either sign; 0 on inactive pairs, as a
// router produces.
inline Tensor make_gates(const Tensor& mask, Rng& rng, const char* name) {
  const std::vector<int32_t> m = mask.to_vector<int32_t>();
  std::vector<double> g(m.size());
  for (size_t i = 0; i < m.size(); ++i) {
    const double mag = 0.5 + rng.uniform();
    const double v = rng.uniform() < 0.5 ? -mag : mag;
    g[i] = m[i] ? v : 0.0;
  }
  Tensor t = Tensor::from_vector<double>(mask.shape(), g);
  t.set_requires_grad(true).set_name(name);
  return t;
}

}  // namespace remoe::test
