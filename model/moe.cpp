#include "model/moe.h"

namespace remoe::model {

MoeOutput moe_forward(const Tensor& x, const MoeWeights& w, const ModelConfig& config,
                      double lambda, const RouteContext& context) {
  Routed routed = route(x, w.router, config, lambda, context);
  const ops::Routing& r = routed.routing;

  const ops::Permutation perm = ops::permute(r.mask);
  const Tensor xs = ops::gather_rows(x, perm);
  const Tensor h = ops::swiglu(ops::grouped_matmul(xs, w.w1, perm),
                               ops::grouped_matmul(xs, w.w3, perm));
  const Tensor y = ops::combine(ops::grouped_matmul(h, w.w2, perm), r.gates, perm);

  MoeLayerStats stats;
  stats.sparsity = ops::sparsity(r);
  stats.expert_counts = r.expert_counts.to_vector<int32_t>();
  stats.dropped = routed.dropped;
  stats.routed = routed.routed;
  stats.z_loss = routed.z_loss;
  return {y, routed.aux, std::move(stats)};
}

}  // namespace remoe::model
