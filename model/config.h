// The model's shape (REMOE_SPEC §4-5): what a config file's [model] section becomes once
// validated.
#pragma once

#include <cstdint>
#include <string>

namespace remoe::model {

enum class FfnKind { dense, moe };
// relu: ReMoE; topk: softmax top-k (dMoE); expert_choice: each expert takes its top-C tokens
// (not causal: see model/README.md); hash: a fixed hash of the token id (no learned router).
enum class RouterKind { relu, topk, expert_choice, hash };
// Which tokens an over-full expert keeps under a capacity factor: the highest-probability ones,
// or the first ones in token order.
enum class DropPolicy { probs, position };
// ReMoE's regulariser: the load-balanced L1 of the main results, or the plain L1 ablation.
enum class L1Kind { load_balanced, plain };

struct ModelConfig {
  int64_t vocab_size = 256;  // bytes
  int64_t d_model = 768;
  int64_t n_layers = 12;
  int64_t n_heads = 12;      // query heads
  int64_t n_kv_heads = 4;    // grouped-query attention
  int64_t d_ffn = 3072;      // SwiGLU intermediate size of the dense FFN
  double norm_eps = 1e-5;
  double rope_base = 1e6;
  double init_std = 0.01;

  FfnKind ffn = FfnKind::moe;
  RouterKind router = RouterKind::relu;
  int64_t n_experts = 8;     // E before granularity
  int64_t top_k = 1;         // k before granularity
  int64_t granularity = 1;   // G: E ← E·G, k ← k·G, expert d_ffn ← d_ffn / G
  L1Kind l1 = L1Kind::load_balanced;  // ReLU routing's regulariser (its coefficient is λ)
  double aux_coeff = 0.01;   // TopK's load-balancing loss coefficient
  bool renormalize = false;  // TopK: divide the k gates by their sum (Mixtral) = softmax after top-k
  // Capacity C = ceil(T·k/E · capacity_factor) routed tokens per expert and micro-batch; 0 is
  // dropless (TopK). Expert choice uses it as its C (0 there means a factor of 1).
  double capacity_factor = 0;
  DropPolicy drop_policy = DropPolicy::probs;  // TopK with capacity_factor > 0
  double z_loss_coeff = 0;   // ST-MoE router z-loss coeff · mean_t (logsumexp_e z_te)²; 0: off
  bool expert_bias = false;  // TopK: aux-loss-free balancing bias on the selection (DeepSeek-V3)
  double bias_update_rate = 1e-3;  // u in b_e ← b_e + u·sign(mean load − load_e), per step
  int64_t k_warm = 0;        // TopK: k_warm experts (before granularity) for the first
  int64_t warm_steps = 0;    //   warm_steps steps (near-dense warm-up); 0: off

  int64_t experts() const { return n_experts * granularity; }
  int64_t active_experts() const { return top_k * granularity; }
  // The k a training step routes with: k_warm·G during a TopK warm-up, else active_experts().
  // step is 0-based; a forward outside training passes a step past the warm-up.
  int64_t active_experts_at(int64_t step) const {
    return k_warm > 0 && step < warm_steps ? k_warm * granularity : active_experts();
  }
  int64_t expert_d_ffn() const { return d_ffn / granularity; }
  int64_t head_dim() const { return d_model / n_heads; }
  double target_sparsity() const { return 1.0 - double(active_experts()) / double(experts()); }

  // Throws remoe::Error naming the first inconsistent field and what is expected.
  void validate() const;
  void validate_routing() const;  // the router options (called by validate for an MoE FFN)
};

}  // namespace remoe::model
