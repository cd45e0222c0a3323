// Expert parallelism equals no expert parallelism. On W ∈ {2, 4} threads (dist::ThreadGroup), in
// f64, each rank with its own tokens:
//   - moe_forward with the rank's L = E / W experts against moe_forward with all E experts on
//     the same tokens: y, aux and the statistics; dx and the router gradient per rank; an expert
//     weight gradient on its owning rank against the sum over ranks of the unsharded gradients
//     of that expert (it is trained on every rank's tokens). Routing is steered so that one rank
//     routes nothing to another, an expert gets no token anywhere, and (in some cases) a whole
//     rank receives nothing: they still take part in every collective.
//   - the whole Transformer: the sharded model's weights are slices of the unsharded model's
//     from the same seed; logits, aux and every parameter gradient agree the same way.
//   - a split of the experts that W does not divide is refused, naming both.
#include <gmock/gmock.h>

#include <cstring>

#include "dist/thread_group.h"
#include "model/moe.h"
#include "model/transformer.h"
#include "tests/dist/run_guarded.h"
#include "tests/test_util.h"

namespace remoe::test {
namespace {

using dist::Communicator;
using ::testing::HasSubstr;

constexpr double kTol = 1e-12;  // f64 against f64: only the order of a few sums differs

// Rows [begin, begin + n) of t, as a new tensor (a copy).
Tensor rows_of(const Tensor& t, int64_t begin, int64_t n) {
  Shape shape = t.shape();
  const size_t row_bytes = t.nbytes() / size_t(shape[0]);
  shape[0] = n;
  Tensor out = Tensor::empty(shape, t.dtype());
  std::memcpy(out.raw(), static_cast<const char*>(t.raw()) + size_t(begin) * row_bytes,
              size_t(n) * row_bytes);
  return out;
}

Tensor leaf(const Tensor& t, const char* name) {
  Tensor c = t.clone();
  c.set_requires_grad(true).set_name(name);
  return c;
}

// Σ y ⊙ g + aux as a scalar: a loss whose gradient reaches y with a dense seed and the router
// through the regulariser too.
Tensor loss_of(const Tensor& y, const Tensor& g, const Tensor& aux) {
  const int64_t n = y.numel();
  const Tensor dot = ops::matmul(ops::reshape(y, {1, n}), ops::reshape(g, {n, 1}));
  return ops::add(ops::reshape(dot, {}), aux);
}

// Σ_q ts[q] in rank order (how the expected expert gradient is summed).
std::vector<double> sum_of(const std::vector<Tensor>& ts) {
  std::vector<double> s(size_t(ts.at(0).numel()), 0.0);
  for (const Tensor& t : ts) {
    const std::vector<double> v = values(t);
    for (size_t i = 0; i < s.size(); ++i) s[i] += v[i];
  }
  return s;
}

// --- the MoE layer ------------------------------------------------------------------------

struct LayerCase {
  const char* name;
  int world;
  int64_t experts;
  model::RouterKind router;
  std::vector<int64_t> dead;  // experts that no token of any rank routes to
  int silent_from, silent_to;  // rank silent_from routes nothing to rank silent_to's experts
};

constexpr int64_t kD = 6, kF = 4;
int64_t tokens_of(int rank) { return std::vector<int64_t>{6, 5, 7, 4}[size_t(rank)]; }

struct LayerResult {
  Tensor y, aux, dx, drouter, dw1, dw3, dw2;
  model::MoeLayerStats stats;
};

class ExpertParallelLayer : public ::testing::TestWithParam<LayerCase> {
 protected:
  model::ModelConfig config() const {
    const LayerCase& p = GetParam();
    model::ModelConfig c;
    c.d_model = kD;
    c.d_ffn = kF;
    c.n_experts = p.experts;
    c.router = p.router;
    c.top_k = p.router == model::RouterKind::topk ? 2 : 1;
    return c;
  }

  // Full weights with the routing steered: coordinate 0 of every token is ≈ 2 and the dead
  // experts' router weight there is −8 (logit ≈ −16); coordinate 1 is 2 on rank silent_from
  // and 0 elsewhere, and silent_to's experts weigh it −8. Other logits are O(1).
  void make_inputs() {
    const LayerCase& p = GetParam();
    const int64_t E = p.experts, L = E / p.world;
    Rng rng(2024);
    std::vector<double> router = values(randn({E, kD}, DType::f64, rng, 0.7));
    for (int64_t e = 0; e < E; ++e) router[size_t(e * kD)] = 0, router[size_t(e * kD + 1)] = 0;
    for (int64_t e : p.dead) router[size_t(e * kD)] = -8;
    for (int64_t e = p.silent_to * L; e < (p.silent_to + 1) * L; ++e) router[size_t(e * kD + 1)] = -8;
    w_.router = Tensor::from_vector<double>({E, kD}, router);
    w_.w1 = randn({E, kF, kD}, DType::f64, rng, 0.5);
    w_.w3 = randn({E, kF, kD}, DType::f64, rng, 0.5);
    w_.w2 = randn({E, kD, kF}, DType::f64, rng, 0.5);
    for (int r = 0; r < p.world; ++r) {
      const int64_t T = tokens_of(r);
      std::vector<double> x = values(randn({T, kD}, DType::f64, rng));
      for (int64_t t = 0; t < T; ++t) {
        x[size_t(t * kD)] = 2 + 0.1 * x[size_t(t * kD)];
        x[size_t(t * kD + 1)] = r == p.silent_from ? 2 : 0;
      }
      x_.push_back(Tensor::from_vector<double>({T, kD}, x));
      seed_.push_back(randn({T, kD}, DType::f64, rng));
    }
  }

  // One rank's layer: weights are fresh leaves (all E experts, or the rank's slice).
  LayerResult run(int rank, const model::MoeWeights& w, const dist::ExpertParallel& ep) const {
    model::MoeWeights leaves{leaf(w.router, "router"), leaf(w.w1, "w1"), leaf(w.w3, "w3"),
                             leaf(w.w2, "w2")};
    const Tensor x = leaf(x_[size_t(rank)], "x");
    model::MoeOutput out = model::moe_forward(x, leaves, config(), kLambda, ep);
    backward(loss_of(out.y, seed_[size_t(rank)], out.aux));
    return {out.y, out.aux, x.grad(), leaves.router.grad(), leaves.w1.grad(), leaves.w3.grad(),
            leaves.w2.grad(), out.stats};
  }

  static constexpr double kLambda = 0.05;
  model::MoeWeights w_;
  std::vector<Tensor> x_, seed_;  // per rank: tokens (T_r, d) and the loss's weights (T_r, d)
};

TEST_P(ExpertParallelLayer, MatchesTheUnshardedLayer) {
  const LayerCase& p = GetParam();
  make_inputs();
  const int W = p.world;
  const int64_t E = p.experts, L = E / W;

  std::vector<LayerResult> ref(static_cast<size_t>(W)), got(static_cast<size_t>(W));
  for (int r = 0; r < W; ++r) ref[size_t(r)] = run(r, w_, {});
  run_ok(W, [&](Communicator& comm) {
    const int r = comm.rank();
    const model::MoeWeights local{w_.router, rows_of(w_.w1, r * L, L), rows_of(w_.w3, r * L, L),
                                  rows_of(w_.w2, r * L, L)};
    got[size_t(r)] = run(r, local, {&comm});
  });

  // The routing does what the case says, so the edge cases are really exercised.
  int64_t routed = 0;
  for (int r = 0; r < W; ++r) {
    const auto& c = ref[size_t(r)].stats.expert_counts;
    for (int64_t e : p.dead) EXPECT_EQ(c[size_t(e)], 0) << "rank " << r << " expert " << e;
    if (r == p.silent_from) {
      for (int64_t e = p.silent_to * L; e < (p.silent_to + 1) * L; ++e)
        EXPECT_EQ(c[size_t(e)], 0) << "rank " << r << " expert " << e;
    }
    for (int32_t n : c) routed += n;
  }
  EXPECT_GT(routed, 2 * W) << "hardly anything routed: the comparison would prove little";
  // With L > 1, some rank must get rows whose arrival order is not their expert order (a later
  // rank's rows for an earlier expert), or the regrouping would go untested.
  if (L > 1) {
    bool reordered = false;
    for (int owner = 0; owner < W; ++owner)
      for (int q = 0; q < W; ++q)
        for (int q2 = q + 1; q2 < W; ++q2)
          for (int64_t j = 0; j < L; ++j)
            for (int64_t j2 = 0; j2 < j; ++j2)
              reordered |= ref[size_t(q)].stats.expert_counts[size_t(owner * L + j)] > 0 &&
                           ref[size_t(q2)].stats.expert_counts[size_t(owner * L + j2)] > 0;
    EXPECT_TRUE(reordered) << "no rank needs its received rows regrouped";
  }
  // (A rank's only token may route to no expert under ReLU: its y and aux are 0, which is
  // right, so non-zero values are asked of the ranks together.)
  double y_abs = 0, aux_sum = 0;
  for (const LayerResult& b : ref) {
    for (double v : values(b.y)) y_abs += std::abs(v);
    aux_sum += b.aux.item();
  }
  EXPECT_GT(y_abs, 0.0);
  EXPECT_GT(aux_sum, 0.0);

  for (int r = 0; r < W; ++r) {
    const LayerResult &a = got[size_t(r)], &b = ref[size_t(r)];
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_TRUE(all_close(a.y, b.y, kTol, kTol));
    EXPECT_TRUE(all_close(a.aux, b.aux, kTol, kTol));
    EXPECT_EQ(a.stats.expert_counts, b.stats.expert_counts);
    EXPECT_EQ(a.stats.sparsity, b.stats.sparsity);
    ASSERT_TRUE(a.dx.defined() && a.drouter.defined());
    EXPECT_TRUE(all_close(a.dx, b.dx, kTol, kTol));
    EXPECT_TRUE(all_close(a.drouter, b.drouter, kTol, kTol));

    // Rank r's experts [r·L, (r+1)·L) learn from every rank's tokens.
    const std::pair<Tensor LayerResult::*, const char*> experts[] = {
        {&LayerResult::dw1, "w1"}, {&LayerResult::dw3, "w3"}, {&LayerResult::dw2, "w2"}};
    for (const auto& [member, name] : experts) {
      std::vector<Tensor> slices;
      for (int q = 0; q < W; ++q) slices.push_back(rows_of(ref[size_t(q)].*member, r * L, L));
      const Tensor& g = a.*member;
      ASSERT_TRUE(g.defined()) << name;
      EXPECT_EQ(g.shape(), slices[0].shape()) << name;
      EXPECT_TRUE(all_close(values(g), sum_of(slices), kTol, kTol)) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ExpertParallelLayer,
    ::testing::Values(
        LayerCase{"relu_w2_e8", 2, 8, model::RouterKind::relu, {7}, 1, 0},
        LayerCase{"topk_w2_e8", 2, 8, model::RouterKind::topk, {7}, 1, 0},
        LayerCase{"relu_w4_e8", 4, 8, model::RouterKind::relu, {7}, 3, 0},
        LayerCase{"topk_w4_e8", 4, 8, model::RouterKind::topk, {7}, 3, 0},
        // One expert per rank (no regrouping); rank 3 holds only the dead expert and receives
        // nothing at all.
        LayerCase{"relu_w4_e4", 4, 4, model::RouterKind::relu, {3}, 0, 1},
        LayerCase{"topk_w4_e4", 4, 4, model::RouterKind::topk, {3}, 0, 1},
        // Rank 1's four experts are all dead: it receives nothing, rank 0 everything.
        LayerCase{"relu_w2_rank_without_tokens", 2, 8, model::RouterKind::relu, {4, 5, 6, 7}, 1, 1}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ExpertParallelLayerErrors, WrongNumberOfLocalExperts) {
  model::ModelConfig c;
  c.d_model = kD;
  c.d_ffn = kF;
  c.n_experts = 4;
  Rng rng(1);
  const model::MoeWeights full{randn({4, kD}, DType::f64, rng), randn({4, kF, kD}, DType::f64, rng),
                               randn({4, kF, kD}, DType::f64, rng), randn({4, kD, kF}, DType::f64, rng)};
  const Tensor x = randn({3, kD}, DType::f64, rng);
  const auto e = run_guarded(2, [&](Communicator& comm) {
    (void)model::moe_forward(x, full, c, 0.0, {&comm});  // all 4 experts, but L = 2
  });
  ASSERT_TRUE(e);
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    EXPECT_THAT(err.what(), HasSubstr("holds E / W = 4 / 2 = 2 experts, but w1, w3, w2 have 4"));
  }
}

// --- the whole model ----------------------------------------------------------------------

model::ModelConfig tiny(model::RouterKind router) {
  model::ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_ffn = 6;
  c.router = router;
  c.n_experts = 4;
  c.top_k = router == model::RouterKind::topk ? 2 : 1;
  c.init_std = 0.5;  // routing far from uniform, so experts see different token sets
  return c;
}

struct ModelResult {
  Tensor logits, aux;
  std::vector<Tensor> grads;
  std::vector<model::MoeLayerStats> layers;
};

// Rank r's batch: r + 1 sequences of 3 tokens (T differs by rank).
Tensor ids_of(int rank) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < 3 * (rank + 1); ++i) ids.push_back(int32_t((7 * i + 3 * rank + 1) % 11));
  return Tensor::from_vector<int32_t>({int64_t(ids.size())}, ids);
}
Tensor targets_of(int rank) {
  std::vector<int32_t> t = ids_of(rank).to_vector<int32_t>();
  for (int32_t& v : t) v = (v + 4) % 11;
  return Tensor::from_vector<int32_t>({int64_t(t.size())}, t);
}

ModelResult step(const model::Transformer& m, int rank) {
  for (const Tensor& p : m.parameters()) p.zero_grad();
  const Tensor ids = ids_of(rank);
  const model::ForwardOutput out = m.forward(ids, rank + 1, 3, 0.05);
  backward(ops::add(ops::cross_entropy(out.logits, targets_of(rank)), out.aux));
  ModelResult r{out.logits, out.aux, {}, out.layers};
  for (const Tensor& p : m.parameters()) r.grads.push_back(p.grad());
  return r;
}

struct ModelCase {
  const char* name;
  int world;
  model::RouterKind router;
};

class ExpertParallelModel : public ::testing::TestWithParam<ModelCase> {};

TEST_P(ExpertParallelModel, MatchesTheUnshardedModel) {
  const ModelCase& p = GetParam();
  const int W = p.world;
  const model::ModelConfig c = tiny(p.router);
  const int64_t L = c.experts() / W;
  constexpr uint64_t kSeed = 7;
  const model::Transformer full(c, kSeed, DType::f64);
  std::vector<ModelResult> ref;
  for (int r = 0; r < W; ++r) ref.push_back(step(full, r));

  std::vector<ModelResult> got(static_cast<size_t>(W));
  std::vector<std::vector<Tensor>> weights(static_cast<size_t>(W));
  std::vector<std::vector<char>> is_expert(static_cast<size_t>(W));
  std::vector<std::array<int64_t, 4>> counts(static_cast<size_t>(W));
  run_ok(W, [&](Communicator& comm) {
    const int r = comm.rank();
    const model::Transformer m(c, kSeed, DType::f64, {&comm});
    weights[size_t(r)] = m.parameters();
    for (size_t i = 0; i < m.parameters().size(); ++i) is_expert[size_t(r)].push_back(m.is_expert_parameter(i));
    counts[size_t(r)] = {m.n_params(), m.n_active_params(), m.first_expert(), m.local_experts()};
    got[size_t(r)] = step(m, r);
    // Eval (no grad) runs the same collectives and gives the same logits.
    NoGradGuard no_grad;
    const model::ForwardOutput eval = m.forward(ids_of(r), r + 1, 3, 0.05);
    EXPECT_EQ(values(eval.logits), values(got[size_t(r)].logits)) << "rank " << r;
  });

  const auto& names = full.parameters();
  for (int r = 0; r < W; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(counts[size_t(r)][0], full.n_params());
    EXPECT_EQ(counts[size_t(r)][1], full.n_active_params());
    EXPECT_EQ(counts[size_t(r)][2], r * L);
    EXPECT_EQ(counts[size_t(r)][3], L);
    const ModelResult &a = got[size_t(r)], &b = ref[size_t(r)];
    EXPECT_TRUE(all_close(a.logits, b.logits, kTol, kTol));
    EXPECT_TRUE(all_close(a.aux, b.aux, kTol, kTol));
    EXPECT_GT(b.aux.item(), 0.0);
    ASSERT_EQ(a.layers.size(), b.layers.size());
    for (size_t l = 0; l < a.layers.size(); ++l)
      EXPECT_EQ(a.layers[l].expert_counts, b.layers[l].expert_counts) << "layer " << l;

    ASSERT_EQ(weights[size_t(r)].size(), names.size());
    int n_expert = 0;
    for (size_t i = 0; i < names.size(); ++i) {
      const Tensor& w = weights[size_t(r)][i];
      const std::string& name = names[i].name();
      SCOPED_TRACE(name);
      EXPECT_EQ(w.name(), name);
      const bool expert = name.find(".moe.w") != std::string::npos;
      EXPECT_EQ(bool(is_expert[size_t(r)][i]), expert);
      ASSERT_TRUE(a.grads[i].defined() && b.grads[i].defined());
      if (!expert) {
        EXPECT_EQ(values(w), values(names[i]));  // replicated: the same weights
        EXPECT_TRUE(all_close(a.grads[i], b.grads[i], kTol, kTol));
        continue;
      }
      ++n_expert;
      // The same seed gives the unsharded model's slice; its gradient sums every rank's tokens.
      EXPECT_EQ(values(w), values(rows_of(names[i], r * L, L)));
      std::vector<Tensor> slices;
      for (int q = 0; q < W; ++q) slices.push_back(rows_of(ref[size_t(q)].grads[i], r * L, L));
      EXPECT_TRUE(all_close(values(a.grads[i]), sum_of(slices), kTol, kTol));
      EXPECT_GT(std::abs(values(a.grads[i])[0]) + std::abs(values(a.grads[i]).back()), 0.0);
    }
    EXPECT_EQ(n_expert, 3 * c.n_layers);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ExpertParallelModel,
                         ::testing::Values(ModelCase{"relu_w2", 2, model::RouterKind::relu},
                                           ModelCase{"relu_w4", 4, model::RouterKind::relu},
                                           ModelCase{"topk_w2", 2, model::RouterKind::topk},
                                           ModelCase{"topk_w4", 4, model::RouterKind::topk}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ExpertParallelModelErrors, UnevenExpertsAreRefused) {
  const dist::ThreadGroup group(4);
  const auto comm = group.communicator(0);
  model::ModelConfig c = tiny(model::RouterKind::relu);
  c.n_experts = 3;
  c.granularity = 2;  // E = 6 over 4 ranks
  c.d_ffn = 6;
  const std::string msg = error_of([&] { model::Transformer m(c, 1, DType::f64, {comm.get()}); });
  EXPECT_THAT(msg, HasSubstr("6 experts (n_experts · granularity)"));
  EXPECT_THAT(msg, HasSubstr("4 expert-parallel ranks"));

  c = tiny(model::RouterKind::relu);
  c.ffn = model::FfnKind::dense;
  EXPECT_THAT(error_of([&] { model::Transformer m(c, 1, DType::f64, {comm.get()}); }),
              HasSubstr("needs an MoE model"));
}

}  // namespace
}  // namespace remoe::test
