#include "model/moe.h"

#include "dist/ops.h"
#include "kernels/nvtx.h"

namespace remoe::model {
namespace {

// The expert FFNs of the routed rows xs (N, d), grouped by expert as perm says:
// W2 · (silu(W1 x) ⊙ W3 x) → (N, d).
Tensor expert_ffn(const Tensor& xs, const MoeWeights& w, const ops::Permutation& perm,
                  Precision p) {
  return grouped_swiglu_ffn(xs, w.w1, w.w3, w.w2, perm, p);
}

// The same on the experts of every rank: xs (N, d) in the local expert-major order of all E
// experts → (N, d) in the same order, computed by the ranks that hold the experts.
Tensor expert_ffn_parallel(const Tensor& xs, const MoeWeights& w, const ops::Permutation& perm,
                           const dist::ExpertParallel& ep, Precision p) {
  const int64_t E = perm.expert_offsets.dim(0) - 1, L = ep.local_experts(E);
  REMOE_CHECK(w.w1.dim(0) == L && w.w3.dim(0) == L && w.w2.dim(0) == L, "moe_forward: rank ",
              ep.rank(), " of ", ep.world(), " expert-parallel ranks holds E / W = ", E, " / ",
              ep.world(), " = ", L, " experts, but w1, w3, w2 have ", w.w1.dim(0), ", ",
              w.w3.dim(0), ", ", w.w2.dim(0));
  const dist::ExpertDispatch plan = dist::plan_expert_dispatch(ep, perm.expert_offsets);
  const Tensor recv = dist::all_to_all_rows(*ep.comm, xs, plan.send_counts, plan.recv_counts);  // (R, d)
  Tensor out;  // (R, d), receive order
  if (plan.regroup) {
    const Tensor grouped = ops::gather_rows(recv, plan.grouped);  // (R, d), by local expert
    out = ops::gather_rows(expert_ffn(grouped, w, plan.grouped, p), plan.received);
  } else {
    out = expert_ffn(recv, w, plan.grouped, p);
  }
  return dist::all_to_all_rows(*ep.comm, out, plan.recv_counts, plan.send_counts);  // (N, d)
}

}  // namespace

MoeOutput moe_forward(const Tensor& x, const MoeWeights& w, const ModelConfig& config,
                      double lambda, const dist::ExpertParallel& ep,
                      const RouteContext& context, Precision precision) {
  const NvtxRange range("moe");  // and inside it one range per stage, for the timeline
  Routed routed;
  {
    const NvtxRange stage("router");
    routed = route(x, w.router, config, lambda, context);
  }
  const ops::Routing& r = routed.routing;
  ops::Permutation perm;
  Tensor xs;  // (N, d), expert-major
  MoeLayerStats stats;
  {
    const NvtxRange stage("dispatch");
    perm = ops::permute(r.mask);
    // NOTE: read here, where permute has just waited for the routing (it reads N back): read
    // after the expert GEMMs, they would make the host wait for those before it can queue the
    // next layer, and leave the GPU idle meanwhile.
    stats.sparsity = ops::sparsity(r);
    stats.expert_counts = r.expert_counts.to_vector<int32_t>();
    xs = ops::gather_rows(x, perm);
  }
  Tensor expert_out;
  {
    const NvtxRange stage("experts");
    expert_out = ep.enabled() ? expert_ffn_parallel(xs, w, perm, ep, precision)
                              : expert_ffn(xs, w, perm, precision);
  }
  // NOTE: with expert parallelism, combine consumes the returning all-to-all's output on every
  // rank, so that node gets a gradient (possibly of zero rows) and runs its collective in
  // backward on every rank; dist/ops.h says why that matters.
  Tensor y;
  {
    const NvtxRange stage("combine");
    y = ops::combine(expert_out, r.gates, perm);
  }

  stats.dropped = routed.dropped;
  stats.routed = routed.routed;
  stats.z_loss = routed.z_loss;
  stats.mask = r.mask;
  return {y, routed.aux, std::move(stats)};
}

}  // namespace remoe::model
