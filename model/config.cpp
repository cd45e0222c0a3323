#include "model/config.h"

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
  }
}

}  // namespace remoe::model
