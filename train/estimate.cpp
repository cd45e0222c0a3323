#include "train/estimate.h"

#include <cstdio>

#include "kernels/check.h"

namespace remoe::train {
namespace {

constexpr double kF32 = 4;  // the CPU trainer keeps everything in f32

std::string human(double v, const char* unit) {
  const char* prefixes[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (v >= 1000 && i < 5) {
    v /= 1000;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g %s%s", v, prefixes[i], unit);
  return buf;
}

std::string human_bytes(double v) {
  const char* prefixes[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (v >= 1024 && i < 4) {
    v /= 1024;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g %s", v, prefixes[i]);
  return buf;
}

}  // namespace

RunEstimate estimate_run(const TrainConfig& config) {
  const model::ModelConfig& m = config.model;
  const double d = double(m.d_model), L = double(m.n_layers), V = double(m.vocab_size);
  const double hd = double(m.head_dim()), Hq = double(m.n_heads), Hkv = double(m.n_kv_heads);
  const double S = double(config.seq_len), T = double(config.batch_size * config.seq_len);
  const bool moe = m.ffn == model::FfnKind::moe;
  const double E = moe ? double(m.experts()) : 1, k = moe ? double(m.active_experts()) : 1;
  const double F = moe ? double(m.expert_d_ffn()) : double(m.d_ffn);

  const double attn = (2 * Hq + 2 * Hkv) * hd * d;  // wq, wo; wk, wv
  const double expert = 3 * d * F;                  // w1, w3, w2
  const double router = moe ? E * d : 0;
  const double norms = 2 * d;
  RunEstimate e;
  e.params = int64_t(V * d + L * (attn + router + E * expert + norms) + d + V * d);
  e.active_params = int64_t(V * d + L * (attn + router + k * expert + norms) + d + V * d);

  const double attention_flops = 12 * L * S * Hq * hd;
  auto matmul_params = [&](double experts) { return L * (attn + router + experts * expert) + V * d; };
  e.flops_per_token = 6 * matmul_params(k) + attention_flops;
  e.flops_per_token_dense = 6 * matmul_params(E) + attention_flops;

  e.weight_bytes = 4 * kF32 * double(e.params);  // weights, grads, m, v
  // Saved per token and layer: the residual input and the two norms' outputs, q, k, v before
  // and after RoPE, the attention output and its log-sum-exp, and per routed copy of the token
  // its gathered input, W1/W3 outputs, SwiGLU output and expert output; plus the logits.
  auto activations = [&](double routed) {
    const double attention = 3 * d + 2 * (Hq + 2 * Hkv) * hd + Hq * hd + Hq;
    const double ffn = moe ? 3 * E + routed * (2 * d + 3 * F) : 3 * F + d;
    return T * (L * (attention + ffn) + 2 * V) * kF32;
  };
  e.activation_bytes = activations(k);
  e.activation_bytes_dense = activations(E);
  return e;
}

std::string describe_estimate(const TrainConfig& c, const RunEstimate& e) {
  const bool moe = c.model.ffn == model::FfnKind::moe;
  const bool relu = moe && c.model.router == model::RouterKind::relu;
  const double tokens = double(c.steps * c.grad_accum * c.batch_size * c.seq_len);
  std::string s;
  s += str_cat("parameters: ", human(double(e.params), ""), " total, ", human(double(e.active_params), ""),
               " active per token\n");
  s += str_cat("training FLOPs per token: ", human(e.flops_per_token, "FLOP"));
  if (relu) s += str_cat(" (k = ", c.model.active_experts(), " experts; Stage I, all ", c.model.experts(),
                         " active: ", human(e.flops_per_token_dense, "FLOP"), ")");
  s += str_cat("\nrun: ", c.steps, " steps × ", c.grad_accum, " × ", c.batch_size, " × ", c.seq_len, " = ",
               human(tokens, "tokens"), ", ", human(tokens * e.flops_per_token, "FLOP"), "\n");
  s += str_cat("memory (f32, estimate): weights + grads + AdamW ", human_bytes(e.weight_bytes),
               "; activations per micro-batch ", human_bytes(e.activation_bytes));
  if (relu) s += str_cat(" (Stage I, dense routing: ", human_bytes(e.activation_bytes_dense), ")");
  s += "\n";
  return s;
}

}  // namespace remoe::train
