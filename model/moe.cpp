#include "model/moe.h"

namespace remoe::model {

MoeOutput moe_forward(const Tensor& x, const MoeWeights& w, const ModelConfig& config,
                      double lambda) {
  const int k = int(config.active_experts());
  const Tensor logits = ops::linear(x, w.router);
  const ops::Routing r = config.router == RouterKind::relu
                             ? ops::relu_router(logits)
                             : ops::topk_router(logits, k, config.renormalize);

  const ops::Permutation perm = ops::permute(r.mask);
  const Tensor xs = ops::gather_rows(x, perm);
  const Tensor h = ops::swiglu(ops::grouped_matmul(xs, w.w1, perm),
                               ops::grouped_matmul(xs, w.w3, perm));
  const Tensor y = ops::combine(ops::grouped_matmul(h, w.w2, perm), r.gates, perm);

  Tensor aux;
  if (config.router == RouterKind::topk)
    aux = ops::load_balance_loss(r.probs, r.expert_counts, config.aux_coeff, k);
  else if (config.l1 == L1Kind::load_balanced)
    aux = ops::load_balance_loss(r.gates, r.expert_counts, lambda, k);
  else
    aux = ops::l1_loss(r.gates, lambda);

  MoeLayerStats stats;
  stats.sparsity = ops::sparsity(r);
  stats.expert_counts = r.expert_counts.to_vector<int32_t>();
  return {y, aux, std::move(stats)};
}

}  // namespace remoe::model
