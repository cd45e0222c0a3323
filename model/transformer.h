// The LLaMA-style decoder of REMOE_SPEC §5: token embedding, L blocks of
// [pre-norm grouped-query attention with RoPE] + [pre-norm FFN], a final RMSNorm and an untied
// output projection. The FFN of every block is a dense SwiGLU or an MoE layer (moe.h).
//
// forward() takes T = batch·seq token ids laid out sequence by sequence and returns the logits,
// the regulariser summed over layers (REMOE_SPEC §2: no 1/L) and each MoE layer's routing
// statistics. Parameters are f32 or f64 leaves with stable names (`layers.3.moe.w1`).
//
// Expert parallel (an ExpertParallel group of W > 1 ranks): rank r holds the experts
// [r·L, (r+1)·L), L = E / W, of every MoE layer; everything else (router included) is
// replicated. The expert parameters keep their global names with the local shape (L, F, d) and
// hold exactly the slice the unsharded model would have from the same seed, so a sharded model
// computes what the unsharded one does. What the trainer does differently for them:
//   - gradients: an expert's gradient already sums over every rank's tokens (the all-to-all's
//     backward brings them home), so it is not all-reduced; where the other gradients are
//     averaged over the ranks' micro-batches (ReduceOp::mean), scale it by 1/W to match;
//   - gradient norm: Σ over ranks of each rank's expert-gradient squares (an all-reduce of one
//     number) plus the replicated part once;
//   - checkpoints: the full (E, F, d) tensor is the all_gather of the ranks' (L, F, d) blocks
//     in rank order; a rank loads its slice [first_expert(), + L).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/random.h"
#include "autodiff/tensor.h"
#include "dist/expert_parallel.h"
#include "model/config.h"
#include "model/moe.h"

namespace remoe::model {

struct ForwardOutput {
  Tensor logits;                      // (T, V)
  Tensor aux;                         // () Σ_l aux_l; a zero constant for a dense model
  std::vector<MoeLayerStats> layers;  // one per MoE layer; empty for a dense model
};

class Transformer {
 public:
  // Initialises every weight from `seed`: N(0, init_std²), output projections of attention and
  // FFN (wo, w2) N(0, (init_std/√(2L))²), the router N(0, 0.01²) at init_std, norms at 1.
  // ep: the expert-parallel group (default: none). Its communicator must outlive the model;
  // W must divide E = n_experts · granularity (an Error names both otherwise).
  Transformer(const ModelConfig& config, uint64_t seed, DType dtype = DType::f32,
              dist::ExpertParallel ep = {});

  // Moves every parameter and the router state to `device` (in place: the handles parameters()
  // returned see it). The model is built on the CPU, from the same draws on any device, so a
  // GPU model starts from the CPU model's weights.
  void to(Device device);
  Device device() const { return embedding_.device(); }
  // Where the forward computes in bf16 (model/precision.h); f32 until set.
  void set_precision(Precision precision) { precision_ = precision; }
  Precision precision() const { return precision_; }

  // ids: (T) i32 with T = batch · seq, on the model's device. lambda scales ReLU routing's
  // regulariser.
  ForwardOutput forward(const Tensor& ids, int64_t batch, int64_t seq, double lambda) const;

  const ModelConfig& config() const { return config_; }
  // Routing state besides the parameters (routing.h): the training step the next forward
  // belongs to (TopK warm-up) and the per-layer expert biases. The trainer sets the step,
  // updates the biases after each step and saves them in checkpoints.
  RouterState& router_state() { return router_state_; }
  const RouterState& router_state() const { return router_state_; }
  const std::vector<Tensor>& parameters() const { return params_; }
  // Both count the global model, every expert of every rank included, whatever the sharding.
  int64_t n_params() const;         // every weight
  int64_t n_active_params() const;  // what one token uses: k of the E experts per layer

  // Expert parallelism: the group, and which parameters are sharded over it (the MoE layers'
  // w1, w3, w2: dimension 0 holds experts [first_expert(), first_expert() + local_experts())).
  const dist::ExpertParallel& expert_parallel() const { return ep_; }
  bool is_expert_parameter(size_t i) const { return expert_param_.at(i) != 0; }
  int64_t first_expert() const { return first_expert_; }    // 0 without expert parallelism
  int64_t local_experts() const { return local_experts_; }  // E without; 0 for a dense model

 private:
  struct Layer {
    Tensor attn_norm, wq, wk, wv, wo;
    Tensor ffn_norm;
    Tensor w1, w3, w2;  // dense FFN: (F, d), (F, d), (d, F)
    MoeWeights moe;     // MoE FFN
  };

  Tensor add_param(const std::string& name, const Shape& shape, double std, Rng& rng);
  // experts (E, rows, cols) drawn in the unsharded order; keeps this rank's L experts.
  Tensor add_expert_param(const std::string& name, int64_t rows, int64_t cols, double std,
                          Rng& rng);
  Tensor attention_block(const Tensor& x, const Layer& layer, int64_t batch, int64_t seq) const;

  ModelConfig config_;
  DType dtype_;
  Precision precision_ = Precision::f32;
  dist::ExpertParallel ep_;
  int64_t first_expert_ = 0, local_experts_ = 0;
  std::vector<char> expert_param_;  // per parameter: 1 when sharded over the experts' ranks
  Tensor embedding_, final_norm_, output_;
  std::vector<Layer> layers_;
  std::vector<Tensor> params_;
  RouterState router_state_;
};

}  // namespace remoe::model
