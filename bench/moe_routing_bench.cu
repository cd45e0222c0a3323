// The memory-bound half of an MoE layer: routers, the permutation, the row gather, the combine
// and the load-balance loss (kernels/router.h, permute.h, combine.h, moe_loss.h), each against
// cudaMemcpyAsync device to device of the same bytes in the same process, and the whole
// routing → loss → permute → gather → combine chain, forward and backward, as one benchmark.
//
// Bytes are what a kernel must move through device memory — each input read once, each output
// written once, by the shapes below (T tokens, E experts, d model width, N routed rows; rows
// bf16, logits/gates/probs f32, masks and indices i32); the kernels' own scratch (the router's
// per-block partials, permute's flags and CUB storage) and combine_backward's zeroing of
// dexpert_out are not counted, so a kernel that moves more than it must shows it in the ratio:
//   relu_router_forward     logits in, gates + mask out, token counts     12·T·E + 4·T
//   relu_router_backward    dgates + logits in, dlogits out               12·T·E
//   topk_router_forward     logits in, gates + probs + mask out, counts   16·T·E + 4·T
//   topk_router_backward    dgates + dprobs + probs + mask in, dlogits    20·T·E
//   permute_indices         mask in, row_of + token_index + offsets out   8·T·E + 4·N + 4·(E+1)
//   gather_rows_forward     N rows read and written, token_index          4·N·d + 4·N
//   gather_rows_backward    dout (N, d) + row_of in, dx (T, d) out        2·N·d + 2·T·d + 4·T·E
//   combine_forward         expert_out + gates + row_of in, y out         2·N·d + 2·T·d + 8·T·E
//   combine_backward        dy + expert_out + gates + row_of in,          4·N·d + 2·T·d + 12·T·E
//                           dexpert_out + dgates out
//   load_balance_loss_*     scores in (forward) / dscores out (backward)  4·T·E + 4·E
// The copy baseline moves the same total (it copies half the bytes: read + write).
//
// Routing data: logits N(0, 1) + a per-expert bias. ReLU: the bias is Φ⁻¹(p_e) so that expert e
// is active for a fraction p_e of the tokens, Σ p_e = k (k active experts per token on
// average, as ReMoE settles to); `uni` p_e = k/E, `zipf` p_e ∝ 1/(e+1) (capped at 0.95) with
// the last expert empty. Top-k: bias 0 (`uni`) or log(1/(e+1)) with the last expert at −30
// (`zipf`). The permutation, gather and combine run on the ReLU routing, N = Σ mask.
#include "bench/cuda_bench.cuh"
#include "kernels/combine.h"
#include "kernels/moe_loss.h"
#include "kernels/permute.h"
#include "kernels/router.h"

#include <memory>

namespace remoe::bench {
namespace {

enum class Load { kUniform, kZipf };

struct Case {
  const char* config;
  int64_t T, E, k, d;
  Load load;
  std::string key() const {
    return std::to_string(T) + "/" + std::to_string(E) + "/" + std::to_string(k) + "/" +
           std::to_string(d) + (load == Load::kUniform ? "u" : "z");
  }
};

double normal_quantile(double p) {  // Φ⁻¹ by bisection; plenty for a bias
  double lo = -12, hi = 12;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// Per-expert biases for the ReLU and the top-k logits (the header comment says what they do).
std::pair<std::vector<float>, std::vector<float>> biases(const Case& c) {
  std::vector<float> relu(size_t(c.E)), topk(size_t(c.E));
  std::vector<double> w(size_t(c.E));
  double total = 0;
  for (int64_t e = 0; e < c.E; ++e)
    total += w[size_t(e)] = c.load == Load::kUniform ? 1.0 : (e + 1 < c.E ? 1.0 / double(e + 1) : 0.0);
  for (int64_t e = 0; e < c.E; ++e) {
    const double p = std::min(0.95, double(c.k) * w[size_t(e)] / total);
    relu[size_t(e)] = p > 0 ? float(normal_quantile(p)) : -30.0f;
    topk[size_t(e)] = c.load == Load::kUniform ? 0.0f : w[size_t(e)] > 0 ? float(std::log(w[size_t(e)])) : -30.0f;
  }
  return {relu, topk};
}

// One set of every input, computed once per case: the benchmarks copy what they need into
// their rotating buffers.
struct Proto {
  std::string key;
  int64_t T, E, d, n_relu = 0, n_topk = 0;
  Buffer<float> logits_relu, logits_topk, gates_relu, gates_topk, probs, dgates, dprobs, dloss;
  Buffer<int32_t> mask_relu, mask_topk, counts_relu, counts_topk, row_of_relu, row_of_topk,
      token_index_relu, token_index_topk, offsets;
  Buffer<bf16> x, rows, dy;  // x (T, d), rows (max N, d) expert outputs / row gradients, dy (T, d)

  explicit Proto(const Case& c)
      : key(c.key()), T(c.T), E(c.E), d(c.d), logits_relu(te()), logits_topk(te()),
        gates_relu(te()), gates_topk(te()), probs(te()), dgates(te()), dprobs(te()), dloss(1),
        mask_relu(te()), mask_topk(te()), counts_relu(size_t(E)), counts_topk(size_t(E)),
        row_of_relu(te()), row_of_topk(te()), token_index_relu(te()), token_index_topk(te()),
        offsets(size_t(E + 1)), x(size_t(T * d)), dy(size_t(T * d)) {
    const auto [relu_bias, topk_bias] = biases(c);
    const Buffer<float> rb = upload(relu_bias), tb = upload(topk_bias);
    fill_normal(logits_relu.get(), te(), 11, 0.0f, 1.0f, rb.get(), size_t(E));
    fill_normal(logits_topk.get(), te(), 12, 0.0f, 1.0f, tb.get(), size_t(E));
    fill_normal(dgates.get(), te(), 13);
    fill_normal(dprobs.get(), te(), 14);
    fill_normal(dloss.get(), 1, 15, 1.0f, 0.0f);
    fill_normal(x.get(), x.size(), 16);
    fill_normal(dy.get(), dy.size(), 17);
    Buffer<float> sums(static_cast<size_t>(E));
    Buffer<int32_t> tokens(static_cast<size_t>(T)), nonzero(1);
    cuda::relu_router_forward(gates_relu.get(), stats(mask_relu, counts_relu, sums, tokens, nonzero),
                              logits_relu.get(), T, E, stream());
    n_relu = read_one(nonzero.get());
    cuda::permute_indices(offsets.get(), token_index_relu.get(), row_of_relu.get(),
                          mask_relu.get(), T, E, stream());
    cuda::topk_router_forward(gates_topk.get(), probs.get(),
                              stats(mask_topk, counts_topk, sums, tokens, nonzero),
                              logits_topk.get(), T, E, int(c.k), false,
                              static_cast<const float*>(nullptr), stream());
    n_topk = read_one(nonzero.get());
    cuda::permute_indices(offsets.get(), token_index_topk.get(), row_of_topk.get(),
                          mask_topk.get(), T, E, stream());
    rows = Buffer<bf16>(size_t(std::max(n_relu, n_topk) * d));
    fill_normal(rows.get(), rows.size(), 18);
    CUDA_CHECK(cudaStreamSynchronize(stream()));
  }

  size_t te() const { return size_t(T * E); }
  static cuda::RouterStats<float> stats(const Buffer<int32_t>& mask, const Buffer<int32_t>& counts,
                                        const Buffer<float>& sums, const Buffer<int32_t>& tokens,
                                        const Buffer<int32_t>& nonzero) {
    return {mask.get(), counts.get(), sums.get(), tokens.get(), nonzero.get()};
  }
};

// The benchmarks of one case run one after the other: keep its Proto between them.
const Proto& proto(const Case& c) {
  static std::unique_ptr<Proto> cached;
  if (!cached || cached->key != c.key()) {
    cached.reset();
    cached = std::make_unique<Proto>(c);
  }
  return *cached;
}

template <typename T>
Rotating<T> copies(const Buffer<T>& src, size_t n, int sets) {
  Rotating<T> r(n, sets);
  r.fill_from(src.get());
  return r;
}

// Router statistics, one set of each per rotation set.
struct Stats {
  Rotating<int32_t> mask, counts, tokens, nonzero;
  Rotating<float> sums;
  Stats(int64_t T, int64_t E, int sets)
      : mask(size_t(T * E), sets), counts(size_t(E), sets), tokens(size_t(T), sets),
        nonzero(1, sets), sums(size_t(E), sets) {}
  cuda::RouterStats<float> at(int64_t s) const {
    return {mask[s], counts[s], sums[s], tokens[s], nonzero[s]};
  }
};

// Bytes each kernel must move (the header comment's table).
struct Bytes {
  double T, E, d, N;
  double relu_fwd() const { return 12 * T * E + 4 * T; }
  double relu_bwd() const { return 12 * T * E; }
  double topk_fwd() const { return 16 * T * E + 4 * T; }
  double topk_bwd() const { return 20 * T * E; }
  double permute() const { return 8 * T * E + 4 * N + 4 * (E + 1); }
  double gather_fwd() const { return 4 * N * d + 4 * N; }
  double gather_bwd() const { return 2 * N * d + 2 * T * d + 4 * T * E; }
  double combine_fwd() const { return 2 * N * d + 2 * T * d + 8 * T * E; }
  double combine_bwd() const { return 4 * N * d + 2 * T * d + 12 * T * E; }
  double loss() const { return 4 * T * E + 4 * E; }
};

enum class Kernel {
  kReluForward, kReluBackward, kTopkForward, kTopkBackward, kPermute, kGatherForward,
  kGatherBackward, kCombineForward, kCombineBackward, kLossForward, kLossBackward,
  kChainRelu, kChainTopk,
};

const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::kReluForward: return "relu_router_forward";
    case Kernel::kReluBackward: return "relu_router_backward";
    case Kernel::kTopkForward: return "topk_router_forward";
    case Kernel::kTopkBackward: return "topk_router_backward";
    case Kernel::kPermute: return "permute_indices";
    case Kernel::kGatherForward: return "gather_rows_forward";
    case Kernel::kGatherBackward: return "gather_rows_backward";
    case Kernel::kCombineForward: return "combine_forward";
    case Kernel::kCombineBackward: return "combine_backward";
    case Kernel::kLossForward: return "load_balance_loss_forward";
    case Kernel::kLossBackward: return "load_balance_loss_backward";
    case Kernel::kChainRelu: return "moe_routing_chain_relu";
    case Kernel::kChainTopk: return "moe_routing_chain_topk";
  }
  return "?";
}

constexpr double kLambda = 1e-3;  // the loss coefficient: any nonzero value

// Routing → load-balance loss → permutation → gather → combine, then their backwards in
// reverse, with identity experts (the gathered rows are the expert outputs). The router's
// backward takes combine's dgates alone: the trainer also adds the loss's dscores (one
// elementwise add, left out).
void run_chain(benchmark::State& state, const Case& c, const Proto& p, bool relu) {
  const int64_t T = c.T, E = c.E, d = c.d, N = relu ? p.n_relu : p.n_topk;
  const Bytes b{double(T), double(E), double(d), double(N)};
  const double bytes = (relu ? b.relu_fwd() + b.relu_bwd() : b.topk_fwd() + b.topk_bwd()) +
                       2 * b.loss() + b.permute() + b.gather_fwd() + b.gather_bwd() +
                       b.combine_fwd() + b.combine_bwd();
  const int sets = rotation_sets(bytes);
  const size_t te = size_t(T * E), td = size_t(T * d), nd = size_t(N * d);
  const Rotating<float> logits = copies(relu ? p.logits_relu : p.logits_topk, te, sets);
  const Rotating<bf16> x = copies(p.x, td, sets), dy = copies(p.dy, td, sets);
  const Rotating<float> dloss = copies(p.dloss, 1, sets);
  Stats st(T, E, sets);
  Rotating<float> gates(te, sets), probs(relu ? 0 : te, sets), loss(1, sets), dgates(te, sets),
      dscores(te, sets), dlogits(te, sets);
  Rotating<int32_t> offsets(size_t(E + 1), sets), token_index(te, sets), row_of(te, sets);
  Rotating<bf16> xs(nd, sets), y(td, sets), dxs(nd, sets), dx(td, sets);
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  auto launch = [&](int64_t i) {
    const int64_t s = i % sets;
    const float* scores = relu ? gates[s] : probs[s];
    if (relu)
      cuda::relu_router_forward(gates[s], st.at(s), logits[s], T, E, stream());
    else
      cuda::topk_router_forward(gates[s], probs[s], st.at(s), logits[s], T, E, int(c.k), false,
                                static_cast<const float*>(nullptr), stream());
    cuda::load_balance_loss_forward(loss[s], scores, st.counts[s], T, E, kLambda, int(c.k), stream());
    cuda::permute_indices(offsets[s], token_index[s], row_of[s], st.mask[s], T, E, stream());
    cuda::gather_rows_forward(xs[s], x[s], token_index[s], N, d, stream());
    cuda::combine_forward(y[s], xs[s], gates[s], row_of[s], T, E, d, stream());
    cuda::combine_backward(dxs[s], dgates[s], dy[s], xs[s], gates[s], row_of[s], T, E, d, N, stream());
    cuda::gather_rows_backward(dx[s], dxs[s], row_of[s], T, E, d, stream());
    cuda::load_balance_loss_backward(dscores[s], dloss[s], st.counts[s], T, E, kLambda, int(c.k), stream());
    if (relu)
      cuda::relu_router_backward(dlogits[s], dgates[s], logits[s], T, E, stream());
    else
      cuda::topk_router_backward(dlogits[s], dgates[s], dscores[s], probs[s], st.mask[s], T, E,
                                 false, stream());
  };
  const Timing t = time_launches(state, launch);
  report_bytes(state, bytes, t);
  state.counters["N"] = double(N);
}

void run(benchmark::State& state, const Case& c, Kernel kernel) {
  const Proto& p = proto(c);
  if (kernel == Kernel::kChainRelu || kernel == Kernel::kChainTopk)
    return run_chain(state, c, p, kernel == Kernel::kChainRelu);
  const int64_t T = c.T, E = c.E, d = c.d, N = p.n_relu;
  const Bytes b{double(T), double(E), double(d), double(N)};
  const size_t te = size_t(T * E), td = size_t(T * d), nd = size_t(N * d);
  double bytes = 0;
  std::function<void(int64_t)> launch;
  // Each case below: its bytes, its rotating inputs (copies of the Proto's) and outputs, held
  // by the launch lambda.
  auto hold = [](auto&& r) { return std::make_shared<std::decay_t<decltype(r)>>(std::move(r)); };
  switch (kernel) {
    case Kernel::kReluForward: {
      bytes = b.relu_fwd();
      const int sets = rotation_sets(bytes);
      auto logits = hold(copies(p.logits_relu, te, sets));
      auto gates = hold(Rotating<float>(te, sets));
      auto st = hold(Stats(T, E, sets));
      launch = [=](int64_t i) {
        cuda::relu_router_forward((*gates)[i], st->at(i), (*logits)[i], T, E, stream());
      };
      break;
    }
    case Kernel::kReluBackward: {
      bytes = b.relu_bwd();
      const int sets = rotation_sets(bytes);
      auto logits = hold(copies(p.logits_relu, te, sets));
      auto dgates = hold(copies(p.dgates, te, sets));
      auto dlogits = hold(Rotating<float>(te, sets));
      launch = [=](int64_t i) {
        cuda::relu_router_backward((*dlogits)[i], (*dgates)[i], (*logits)[i], T, E, stream());
      };
      break;
    }
    case Kernel::kTopkForward: {
      bytes = b.topk_fwd();
      const int sets = rotation_sets(bytes);
      auto logits = hold(copies(p.logits_topk, te, sets));
      auto gates = hold(Rotating<float>(te, sets));
      auto probs = hold(Rotating<float>(te, sets));
      auto st = hold(Stats(T, E, sets));
      const int k = int(c.k);
      launch = [=](int64_t i) {
        cuda::topk_router_forward((*gates)[i], (*probs)[i], st->at(i), (*logits)[i], T, E, k,
                                  false, static_cast<const float*>(nullptr), stream());  // no bias
      };
      break;
    }
    case Kernel::kTopkBackward: {
      bytes = b.topk_bwd();
      const int sets = rotation_sets(bytes);
      auto dgates = hold(copies(p.dgates, te, sets));
      auto dprobs = hold(copies(p.dprobs, te, sets));
      auto probs = hold(copies(p.probs, te, sets));
      auto mask = hold(copies(p.mask_topk, te, sets));
      auto dlogits = hold(Rotating<float>(te, sets));
      launch = [=](int64_t i) {
        cuda::topk_router_backward((*dlogits)[i], (*dgates)[i], (*dprobs)[i], (*probs)[i],
                                   (*mask)[i], T, E, false, stream());
      };
      break;
    }
    case Kernel::kPermute: {
      bytes = b.permute();
      const int sets = rotation_sets(bytes);
      auto mask = hold(copies(p.mask_relu, te, sets));
      auto offsets = hold(Rotating<int32_t>(size_t(E + 1), sets));
      auto token_index = hold(Rotating<int32_t>(te, sets));
      auto row_of = hold(Rotating<int32_t>(te, sets));
      launch = [=](int64_t i) {
        cuda::permute_indices((*offsets)[i], (*token_index)[i], (*row_of)[i], (*mask)[i], T, E,
                              stream());
      };
      break;
    }
    case Kernel::kGatherForward: {
      bytes = b.gather_fwd();
      const int sets = rotation_sets(bytes);
      auto x = hold(copies(p.x, td, sets));
      auto token_index = hold(copies(p.token_index_relu, size_t(N), sets));
      auto out = hold(Rotating<bf16>(nd, sets));
      launch = [=](int64_t i) {
        cuda::gather_rows_forward((*out)[i], (*x)[i], (*token_index)[i], N, d, stream());
      };
      break;
    }
    case Kernel::kGatherBackward: {
      bytes = b.gather_bwd();
      const int sets = rotation_sets(bytes);
      auto dout = hold(copies(p.rows, nd, sets));
      auto row_of = hold(copies(p.row_of_relu, te, sets));
      auto dx = hold(Rotating<bf16>(td, sets));
      launch = [=](int64_t i) {
        cuda::gather_rows_backward((*dx)[i], (*dout)[i], (*row_of)[i], T, E, d, stream());
      };
      break;
    }
    case Kernel::kCombineForward: {
      bytes = b.combine_fwd();
      const int sets = rotation_sets(bytes);
      auto rows = hold(copies(p.rows, nd, sets));
      auto gates = hold(copies(p.gates_relu, te, sets));
      auto row_of = hold(copies(p.row_of_relu, te, sets));
      auto y = hold(Rotating<bf16>(td, sets));
      launch = [=](int64_t i) {
        cuda::combine_forward((*y)[i], (*rows)[i], (*gates)[i], (*row_of)[i], T, E, d, stream());
      };
      break;
    }
    case Kernel::kCombineBackward: {
      bytes = b.combine_bwd();
      const int sets = rotation_sets(bytes);
      auto rows = hold(copies(p.rows, nd, sets));
      auto gates = hold(copies(p.gates_relu, te, sets));
      auto row_of = hold(copies(p.row_of_relu, te, sets));
      auto dy = hold(copies(p.dy, td, sets));
      auto drows = hold(Rotating<bf16>(nd, sets));
      auto dgates = hold(Rotating<float>(te, sets));
      launch = [=](int64_t i) {
        cuda::combine_backward((*drows)[i], (*dgates)[i], (*dy)[i], (*rows)[i], (*gates)[i],
                               (*row_of)[i], T, E, d, N, stream());
      };
      break;
    }
    case Kernel::kLossForward: {
      bytes = b.loss();
      const int sets = rotation_sets(bytes);
      auto scores = hold(copies(p.gates_relu, te, sets));
      auto counts = hold(copies(p.counts_relu, size_t(E), sets));
      auto loss = hold(Rotating<float>(1, sets));
      const int k = int(c.k);
      launch = [=](int64_t i) {
        cuda::load_balance_loss_forward((*loss)[i], (*scores)[i], (*counts)[i], T, E, kLambda, k,
                                        stream());
      };
      break;
    }
    case Kernel::kLossBackward: {
      bytes = b.loss();
      const int sets = rotation_sets(bytes);
      auto dloss = hold(copies(p.dloss, 1, sets));
      auto counts = hold(copies(p.counts_relu, size_t(E), sets));
      auto dscores = hold(Rotating<float>(te, sets));
      const int k = int(c.k);
      launch = [=](int64_t i) {
        cuda::load_balance_loss_backward((*dscores)[i], (*dloss)[i], (*counts)[i], T, E, kLambda,
                                         k, stream());
      };
      break;
    }
    default:
      break;
  }
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  const Timing t = time_launches(state, launch);
  report_bytes(state, bytes, t);
  state.counters["N"] = double(N);
}

void register_all() {
  // Representative subset of the issue's grid (bench/README.md says why each is here).
  const std::vector<Case> cases = {
      {"182M", 8192, 8, 1, 768, Load::kUniform},
      {"182M", 8192, 8, 1, 768, Load::kZipf},
      {"stage1", 32768, 8, 4, 768, Load::kUniform},  // ReLU Stage I: half the pairs active
      {"E32", 32768, 32, 2, 1536, Load::kUniform},
      {"E32", 32768, 32, 2, 1536, Load::kZipf},
      {"E128", 65536, 128, 8, 768, Load::kUniform},
      {"E128", 65536, 128, 8, 768, Load::kZipf},
      {"978M", 65536, 8, 2, 1536, Load::kUniform},
  };
  const Kernel kernels[] = {
      Kernel::kReluForward, Kernel::kReluBackward, Kernel::kTopkForward, Kernel::kTopkBackward,
      Kernel::kPermute, Kernel::kGatherForward, Kernel::kGatherBackward, Kernel::kCombineForward,
      Kernel::kCombineBackward, Kernel::kLossForward, Kernel::kLossBackward, Kernel::kChainRelu,
      Kernel::kChainTopk,
  };
  for (const Case& c : cases)
    for (Kernel k : kernels) {
      const std::string name = shape_name(
          kernel_name(k), {{"cfg", c.config}, {"load", c.load == Load::kUniform ? "uni" : "zipf"},
                           {"T", num(c.T)}, {"E", num(c.E)}, {"k", num(c.k)}, {"d", num(c.d)}});
      add(name, [c, k](benchmark::State& s) { run(s, c, k); });
    }
}

}  // namespace
}  // namespace remoe::bench

int main(int argc, char** argv) { return remoe::bench::run_main(argc, argv, remoe::bench::register_all); }
