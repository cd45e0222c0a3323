// The LLaMA-style decoder of REMOE_SPEC §5: token embedding, L blocks of
// [pre-norm grouped-query attention with RoPE] + [pre-norm FFN], a final RMSNorm and an untied
// output projection. The FFN of every block is a dense SwiGLU or an MoE layer (moe.h).
//
// forward() takes T = batch·seq token ids laid out sequence by sequence and returns the logits,
// the regulariser summed over layers (REMOE_SPEC §2: no 1/L) and each MoE layer's routing
// statistics. Parameters are f32 or f64 leaves with stable names (`layers.3.moe.w1`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autodiff/random.h"
#include "autodiff/tensor.h"
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
  Transformer(const ModelConfig& config, uint64_t seed, DType dtype = DType::f32);

  // ids: (T) i32 with T = batch · seq. lambda scales ReLU routing's regulariser.
  ForwardOutput forward(const Tensor& ids, int64_t batch, int64_t seq, double lambda) const;

  const ModelConfig& config() const { return config_; }
  // Routing state besides the parameters (routing.h): the training step the next forward
  // belongs to (TopK warm-up) and the per-layer expert biases. The trainer sets the step,
  // updates the biases after each step and saves them in checkpoints.
  RouterState& router_state() { return router_state_; }
  const RouterState& router_state() const { return router_state_; }
  const std::vector<Tensor>& parameters() const { return params_; }
  int64_t n_params() const;         // every weight
  int64_t n_active_params() const;  // what one token uses: k of the E experts per layer

 private:
  struct Layer {
    Tensor attn_norm, wq, wk, wv, wo;
    Tensor ffn_norm;
    Tensor w1, w3, w2;  // dense FFN: (F, d), (F, d), (d, F)
    MoeWeights moe;     // MoE FFN
  };

  Tensor add_param(const std::string& name, const Shape& shape, double std, Rng& rng);
  Tensor attention_block(const Tensor& x, const Layer& layer, int64_t batch, int64_t seq) const;

  ModelConfig config_;
  DType dtype_;
  Tensor embedding_, final_norm_, output_;
  std::vector<Layer> layers_;
  std::vector<Tensor> params_;
  RouterState router_state_;
};

}  // namespace remoe::model
