#include "model/transformer.h"

#include <cmath>
#include <cstring>

#include "autodiff/ops.h"
#include "kernels/nvtx.h"

namespace remoe::model {

Tensor Transformer::add_param(const std::string& name, const Shape& shape, double std, Rng& rng) {
  Tensor t = std > 0 ? randn(shape, dtype_, rng, std) : Tensor::full(shape, 1.0, dtype_);
  t.set_requires_grad(true).set_name(name);
  params_.push_back(t);
  expert_param_.push_back(0);
  return t;
}

Tensor Transformer::add_expert_param(const std::string& name, int64_t rows, int64_t cols,
                                     double std, Rng& rng) {
  const int64_t E = config_.experts(), L = local_experts_, per_expert = rows * cols;
  Tensor t = Tensor::empty({L, rows, cols}, dtype_);
  const size_t bytes = size_t(per_expert) * dtype_size(dtype_);
  // randn fills element by element in order, so drawing one expert at a time gives the
  // unsharded (E, rows, cols) tensor's values; the other ranks' experts are drawn and dropped.
  for (int64_t e = 0; e < E; ++e) {
    const Tensor one = randn({rows, cols}, dtype_, rng, std);
    if (e >= first_expert_ && e < first_expert_ + L)
      std::memcpy(static_cast<char*>(t.raw()) + size_t(e - first_expert_) * bytes, one.raw(), bytes);
  }
  t.set_requires_grad(true).set_name(name);
  params_.push_back(t);
  expert_param_.push_back(1);
  return t;
}

Transformer::Transformer(const ModelConfig& config, uint64_t seed, DType dtype,
                         dist::ExpertParallel ep)
    : config_(config), dtype_(dtype), ep_(ep) {
  config_.validate();
  REMOE_CHECK(dtype == DType::f32 || dtype == DType::f64,
              "Transformer: parameters are f32 or f64, got ", dtype_name(dtype));
  if (config_.ffn == FfnKind::moe) {
    local_experts_ = ep_.local_experts(config_.experts());  // refuses an uneven split
    first_expert_ = ep_.first_expert(config_.experts());
  } else {
    REMOE_CHECK(!ep_.enabled(), "Transformer: expert parallelism over ", ep_.world(),
                " ranks needs an MoE model (ffn = moe), but this one is dense");
  }
  Rng rng(seed);
  const auto& c = config_;
  const int64_t d = c.d_model, hd = c.head_dim();
  const double std = c.init_std;
  const double out_std = c.init_std / std::sqrt(2.0 * double(c.n_layers));
  constexpr double kNorm = 0;  // add_param: std 0 means "ones"

  embedding_ = add_param("tok_embeddings", {c.vocab_size, d}, std, rng);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    Layer l;
    l.attn_norm = add_param(p + "attention_norm", {d}, kNorm, rng);
    l.wq = add_param(p + "attention.wq", {c.n_heads * hd, d}, std, rng);
    l.wk = add_param(p + "attention.wk", {c.n_kv_heads * hd, d}, std, rng);
    l.wv = add_param(p + "attention.wv", {c.n_kv_heads * hd, d}, std, rng);
    l.wo = add_param(p + "attention.wo", {d, c.n_heads * hd}, out_std, rng);
    l.ffn_norm = add_param(p + "ffn_norm", {d}, kNorm, rng);
    if (c.ffn == FfnKind::dense) {
      l.w1 = add_param(p + "ffn.w1", {c.d_ffn, d}, std, rng);
      l.w3 = add_param(p + "ffn.w3", {c.d_ffn, d}, std, rng);
      l.w2 = add_param(p + "ffn.w2", {d, c.d_ffn}, out_std, rng);
    } else {
      const int64_t E = c.experts(), F = c.expert_d_ffn();  // the router sees all E
      if (c.router != RouterKind::hash)  // hash routing learns nothing
        l.moe.router = add_param(p + "moe.router", {E, d}, std, rng);
      l.moe.w1 = add_expert_param(p + "moe.w1", F, d, std, rng);
      l.moe.w3 = add_expert_param(p + "moe.w3", F, d, std, rng);
      l.moe.w2 = add_expert_param(p + "moe.w2", d, F, out_std, rng);
    }
    layers_.push_back(std::move(l));
  }
  final_norm_ = add_param("norm", {d}, kNorm, rng);
  output_ = add_param("output", {c.vocab_size, d}, std, rng);
  router_state_ = initial_router_state(c, dtype_);
}

void Transformer::to(Device device) {
  for (const Tensor& p : params_) p.move_to(device);
  for (const Tensor& b : router_state_.bias) b.move_to(device);
}

Tensor Transformer::attention_block(const Tensor& x, const Layer& l, int64_t batch,
                                    int64_t seq) const {
  const NvtxRange range("attention");
  const auto& c = config_;
  const int64_t hd = c.head_dim();
  const Tensor h = ops::rmsnorm(x, l.attn_norm, c.norm_eps);
  const Precision p = precision_;
  const Tensor q = ops::rope(ops::reshape(linear(h, l.wq, p), {batch, seq, c.n_heads, hd}), c.rope_base);
  const Tensor k = ops::rope(ops::reshape(linear(h, l.wk, p), {batch, seq, c.n_kv_heads, hd}), c.rope_base);
  const Tensor v = ops::reshape(linear(h, l.wv, p), {batch, seq, c.n_kv_heads, hd});
  const Tensor o = ops::reshape(attention(q, k, v, p), {batch * seq, c.n_heads * hd});
  return linear(o, l.wo, p);
}

ForwardOutput Transformer::forward(const Tensor& ids, int64_t batch, int64_t seq,
                                   double lambda) const {
  REMOE_CHECK(ids.ndim() == 1 && ids.dim(0) == batch * seq, "Transformer::forward: ids ",
              shape_str(ids.shape()), " should hold batch · seq = ", batch, " · ", seq, " tokens");
  const NvtxRange range("forward");
  const auto& c = config_;
  ForwardOutput out;
  out.aux = Tensor::zeros({}, dtype_, device());
  Tensor x = ops::embedding(ids, embedding_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    const NvtxRange layer_range(("layer " + std::to_string(i)).c_str());
    x = ops::add(x, attention_block(x, l, batch, seq));
    const Tensor h = ops::rmsnorm(x, l.ffn_norm, c.norm_eps);
    if (c.ffn == FfnKind::dense) {
      const NvtxRange ffn_range("ffn");
      x = ops::add(x, swiglu_ffn(h, l.w1, l.w3, l.w2, precision_));
    } else {
      const RouteContext context{ids, i < router_state_.bias.size() ? router_state_.bias[i] : Tensor(),
                                 router_state_.step};
      MoeOutput moe = moe_forward(h, l.moe, c, lambda, ep_, context, precision_);
      x = ops::add(x, moe.y);
      out.aux = ops::add(out.aux, moe.aux);
      out.layers.push_back(std::move(moe.stats));
    }
  }
  const NvtxRange head_range("lm_head");
  out.logits = linear(ops::rmsnorm(x, final_norm_, c.norm_eps), output_, precision_);
  return out;
}

int64_t Transformer::n_params() const {
  int64_t n = 0;
  for (size_t i = 0; i < params_.size(); ++i)
    n += params_[i].numel() * (expert_param_[i] ? ep_.world() : 1);  // every rank's experts
  return n;
}

int64_t Transformer::n_active_params() const {
  if (config_.ffn == FfnKind::dense) return n_params();
  const int64_t E = config_.experts(), k = config_.active_experts();
  int64_t expert_weights = 0;  // global: the local slice times the ranks
  for (const Layer& l : layers_)
    expert_weights += (l.moe.w1.numel() + l.moe.w3.numel() + l.moe.w2.numel()) * ep_.world();
  return n_params() - expert_weights + expert_weights / E * k;
}

}  // namespace remoe::model
