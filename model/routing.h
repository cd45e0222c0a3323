// The routing front of an MoE layer (model/README.md, "Routers"): from the layer input to
// ops::Routing — the router the config names, its variants (bias, capacity dropping, warm-up)
// and its regulariser. What comes after (permutation, grouped matmuls, combine) is the same for
// every router.
//
//   relu           R = max(z, 0)                        aux: λ · load-balanced or plain L1
//   topk           p = softmax(z), top-k of p (+ bias)   aux: aux_coeff · balance loss on p
//   expert_choice  p = softmax(z), each expert its top-C tokens   aux: none (balanced by design)
//   hash           experts of splitmix64(token id)       aux: none; no router weights
// plus coeff · mean_t (logsumexp z_t)² (z-loss) for any router with logits, and, for TopK with
// a capacity factor, the pairs over an expert's capacity dropped after the aux loss is taken.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "autodiff/ops.h"
#include "model/config.h"

namespace remoe::model {

// A forward outside training (evaluation of a finished run, sampling) routes as after warm-up.
inline constexpr int64_t kAfterTraining = std::numeric_limits<int64_t>::max();

// Routing state the model owns besides its parameters: saved in checkpoints, not trained.
struct RouterState {
  int64_t step = kAfterTraining;  // the 0-based training step the next forward belongs to
  std::vector<Tensor> bias;       // per MoE layer (E): aux-loss-free balancing; empty when off
};

// What one layer's routing needs besides its input and weights.
struct RouteContext {
  Tensor ids;                     // (T) i32 token ids: hash routing only
  Tensor bias;                    // (E) selection bias (TopK, expert_bias); undefined: none
  int64_t step = kAfterTraining;  // selects k during a TopK warm-up
};

struct Routed {
  ops::Routing routing;  // what permute/combine use: after capacity dropping
  Tensor aux;            // () the layer's regulariser, z-loss included
  int64_t dropped = 0;   // (token, expert) pairs dropped by the capacity
  int64_t routed = 0;    // pairs routed before dropping
  double z_loss = 0;     // the z-loss part of aux (0 when off)
};

// x: (T, d); router_w: (E, d) (undefined for hash routing). lambda: ReLU routing's coefficient.
Routed route(const Tensor& x, const Tensor& router_w, const ModelConfig& config, double lambda,
             const RouteContext& context);

// A fresh state: zero biases, one (E) tensor of `dtype` per layer when config.expert_bias.
RouterState initial_router_state(const ModelConfig& config, DType dtype);

// b_e ← b_e + rate · sign(mean_e load − load_e) per layer, from counts[l][e] (the step's routed
// tokens per expert, summed over micro-batches and ranks). Not recorded on the tape.
void update_expert_bias(RouterState& state, const std::vector<std::vector<double>>& counts,
                        double rate);

// "" or a one-line warning about the config (expert choice is not causal).
std::string routing_warning(const ModelConfig& config);

}  // namespace remoe::model
