// The model's shape (REMOE_SPEC §4-5): what a config file's [model] section becomes once
// validated.
#pragma once

#include <cstdint>
#include <string>

namespace remoe::model {

enum class FfnKind { dense, moe };
enum class RouterKind { relu, topk };
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
  bool renormalize = false;  // TopK: divide the k gates by their sum (Mixtral)

  int64_t experts() const { return n_experts * granularity; }
  int64_t active_experts() const { return top_k * granularity; }
  int64_t expert_d_ffn() const { return d_ffn / granularity; }
  int64_t head_dim() const { return d_model / n_heads; }
  double target_sparsity() const { return 1.0 - double(active_experts()) / double(experts()); }

  // Throws remoe::Error naming the first inconsistent field and what is expected.
  void validate() const;
};

}  // namespace remoe::model
