#include "model/routing.h"

#include <type_traits>

#include "autodiff/device.h"
#include "kernels/check.h"

namespace remoe::model {

Routed route(const Tensor& x, const Tensor& router_w, const ModelConfig& c, double lambda,
             const RouteContext& ctx) {
  const int64_t n_tokens = x.dim(0), n_experts = c.experts();
  const int k = int(c.active_experts_at(ctx.step));
  Routed out;
  if (c.router == RouterKind::hash) {
    REMOE_CHECK(ctx.ids.defined() && ctx.ids.ndim() == 1 && ctx.ids.dim(0) == n_tokens,
                "model.router = \"hash\" needs the token ids of the layer's ", n_tokens,
                " tokens (moe_forward's RouteContext::ids), got ",
                ctx.ids.defined() ? shape_str(ctx.ids.shape()) : std::string("none"));
    out.routing = ops::hash_router(ctx.ids, n_experts, k, x.dtype());
    out.aux = Tensor::zeros({}, x.dtype(), x.device());
    out.routed = n_tokens * k;
    return out;
  }
  const Tensor logits = ops::linear(x, router_w);  // (T, E)
  ops::Routing r;
  switch (c.router) {
    case RouterKind::relu:
      r = ops::relu_router(logits);
      out.aux = c.l1 == L1Kind::load_balanced ? ops::load_balance_loss(r.gates, r.expert_counts, lambda, k)
                                              : ops::l1_loss(r.gates, lambda);
      break;
    case RouterKind::topk:
      r = ops::topk_router(logits, k, c.renormalize, ctx.bias);
      // The balance loss sees the routing before any dropping (Megatron's order).
      out.aux = ops::load_balance_loss(r.probs, r.expert_counts, c.aux_coeff, k);
      break;
    case RouterKind::expert_choice: {
      const double factor = c.capacity_factor > 0 ? c.capacity_factor : 1.0;
      r = ops::expert_choice_router(logits, ops::expert_capacity(n_tokens, k, n_experts, factor));
      out.aux = Tensor::zeros({}, x.dtype(), x.device());  // every expert takes C tokens: balanced already
      break;
    }
    case RouterKind::hash: break;  // above
  }
  if (c.z_loss_coeff > 0) {
    const Tensor z = ops::z_loss(logits, c.z_loss_coeff);
    out.z_loss = z.item();
    out.aux = ops::add(out.aux, z);
  }
  out.routed = int64_t(r.nonzero.item());
  if (c.router == RouterKind::topk && c.capacity_factor > 0) {
    r = ops::drop_over_capacity(r, r.probs,
                                ops::expert_capacity(n_tokens, k, n_experts, c.capacity_factor),
                                c.drop_policy == DropPolicy::position);
    out.dropped = out.routed - int64_t(r.nonzero.item());
  }
  out.routing = std::move(r);
  return out;
}

RouterState initial_router_state(const ModelConfig& config, DType dtype) {
  RouterState s;
  if (config.ffn == FfnKind::moe && config.expert_bias)
    for (int64_t l = 0; l < config.n_layers; ++l)
      s.bias.push_back(Tensor::zeros({config.experts()}, dtype)
                           .set_name("layers." + std::to_string(l) + ".moe.expert_bias"));
  return s;
}

void update_expert_bias(RouterState& state, const std::vector<std::vector<double>>& counts,
                        double rate) {
  REMOE_CHECK(counts.size() == state.bias.size(), "update_expert_bias: counts of ",
              counts.size(), " layers for ", state.bias.size(), " bias tensors");
  for (size_t l = 0; l < counts.size(); ++l) {
    Tensor& b = state.bias[l];
    // The rule runs on the host (E numbers); a GPU bias is read and written back.
    const Tensor host = b.device() == Device::cpu ? b : b.to(Device::cpu);
    const int64_t n = b.numel();
    REMOE_CHECK(int64_t(counts[l].size()) == n, "update_expert_bias: layer ", l, " has ",
                counts[l].size(), " counts for ", n, " experts");
    double mean = 0;
    for (double v : counts[l]) mean += v / double(n);
    const auto step = [&](auto* p) {  // in the bias's own precision, as a GPU would
      using T = std::remove_pointer_t<decltype(p)>;
      for (int64_t e = 0; e < n; ++e) {
        const double diff = mean - counts[l][size_t(e)];
        p[e] = T(double(p[e]) + rate * double((diff > 0) - (diff < 0)));
      }
    };
    if (b.dtype() == DType::f64) step(host.data<double>());
    else step(host.data<float>());
    if (!host.same_storage(b)) device::copy(b.raw(), b.device(), host.raw(), Device::cpu, b.nbytes());
  }
}

std::string routing_warning(const ModelConfig& config) {
  if (config.ffn != FfnKind::moe || config.router != RouterKind::expert_choice) return "";
  return "warning: model.router = \"expert_choice\" is not causal: which tokens an expert takes "
         "depends on the whole micro-batch, later positions included, so the LM can see the "
         "future through its routing and generation (one token at a time) routes differently "
         "from training; use it as a comparison baseline, not for a causal LM you will sample";
}

}  // namespace remoe::model
