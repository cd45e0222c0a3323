#include "model/config.h"

#include <cmath>

#include "kernels/check.h"

namespace remoe::model {

void ModelConfig::validate() const {
  REMOE_CHECK(vocab_size > 0, "model.vocab_size must be positive, got ", vocab_size);
  REMOE_CHECK(d_model > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 && d_ffn > 0,
              "model: d_model, n_layers, n_heads, n_kv_heads and d_ffn must be positive");
  REMOE_CHECK(d_model % n_heads == 0, "model.d_model = ", d_model,
              " is not divisible by model.n_heads = ", n_heads);
  REMOE_CHECK(head_dim() % 2 == 0, "model: head dimension d_model / n_heads = ", head_dim(),
              " must be even for RoPE");
  REMOE_CHECK(n_heads % n_kv_heads == 0, "model.n_heads = ", n_heads,
              " is not a multiple of model.n_kv_heads = ", n_kv_heads);
  REMOE_CHECK(norm_eps > 0, "model.norm_eps must be positive, got ", norm_eps);
  REMOE_CHECK(rope_base > 1, "model.rope_base must be greater than 1, got ", rope_base);
  // experts() and active_experts() are computed for every config (the trainer's target sparsity),
  // whatever the FFN kind: their products must not overflow.
  int64_t product = 0;
  REMOE_CHECK(!__builtin_mul_overflow(n_experts, granularity, &product) &&
                  !__builtin_mul_overflow(top_k, granularity, &product),
              "model: n_experts = ", n_experts, " or top_k = ", top_k, " times granularity = ",
              granularity, " overflows a 64-bit integer");
  if (ffn == FfnKind::moe) {
    REMOE_CHECK(n_experts >= 1, "model.n_experts must be at least 1, got ", n_experts);
    REMOE_CHECK(granularity >= 1, "model.granularity must be at least 1, got ", granularity);
    REMOE_CHECK(top_k >= 1 && top_k <= n_experts, "model.top_k = ", top_k,
                " must be in [1, n_experts = ", n_experts, "]");
    REMOE_CHECK(d_ffn % granularity == 0, "model.d_ffn = ", d_ffn,
                " is not divisible by model.granularity = ", granularity);
    validate_routing();
  }
}

void ModelConfig::validate_routing() const {
  static constexpr const char* kRouterNames[] = {"relu", "topk", "expert_choice", "hash"};
  const char* router_name = kRouterNames[static_cast<int>(router)];
  const bool topk = router == RouterKind::topk;
  REMOE_CHECK(std::isfinite(capacity_factor) && capacity_factor >= 0,
              "model.capacity_factor must be >= 0 and finite (0: dropless), got ", capacity_factor);
  REMOE_CHECK(capacity_factor == 0 || topk || router == RouterKind::expert_choice,
              "model.capacity_factor = ", capacity_factor, " applies to model.router = \"topk\" ",
              "or \"expert_choice\", got \"", router_name, "\" (which is dropless); set it to 0");
  REMOE_CHECK(std::isfinite(z_loss_coeff) && z_loss_coeff >= 0,
              "model.z_loss_coeff must be >= 0 and finite (0: off), got ", z_loss_coeff);
  REMOE_CHECK(z_loss_coeff == 0 || router != RouterKind::hash, "model.z_loss_coeff = ",
              z_loss_coeff, " needs router logits, but model.router = \"hash\" has none; set it to 0");
  REMOE_CHECK(!expert_bias || topk, "model.expert_bias = true needs model.router = \"topk\", got \"",
              router_name, "\"");
  REMOE_CHECK(std::isfinite(bias_update_rate) && bias_update_rate >= 0,
              "model.bias_update_rate must be >= 0 and finite, got ", bias_update_rate);
  REMOE_CHECK(k_warm >= 0 && k_warm <= n_experts, "model.k_warm = ", k_warm,
              " must be in [0, n_experts = ", n_experts, "] (0: no warm-up)");
  REMOE_CHECK(k_warm == 0 || topk, "model.k_warm = ", k_warm,
              " (a near-dense warm-up) needs model.router = \"topk\", got \"", router_name, "\"");
  REMOE_CHECK(k_warm == 0 || k_warm >= top_k, "model.k_warm = ", k_warm,
              " must be at least model.top_k = ", top_k, " (the warm-up routes to more experts)");
  REMOE_CHECK(warm_steps >= 0, "model.warm_steps must be >= 0, got ", warm_steps);
}

}  // namespace remoe::model
