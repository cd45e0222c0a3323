// `remoe export`: a checkpoint as a Hugging Face folder that `transformers` loads —
//   config.json        LlamaForCausalLM (dense FFN) or MixtralForCausalLM (MoE), plus a
//                      "remoe" object with what HF's config cannot say (router, renormalisation,
//                      granularity, λ, tokenizer)
//   model.safetensors  HF tensor names, __metadata__ {"format": "pt"}
//   README.md          how to load it, how to feed bytes, where HF's forward differs
//
// Conventions checked against HF's Llama/Mixtral code, so the weights go across unchanged:
//   - linear weights are (out, in) in both (x Wᵀ, torch.nn.Linear);
//   - RoPE is rotate-half in both (kernels/rope.h: element i pairs with i + Dh/2, angle
//     s · base^(−2i/Dh)), so q/k need no permutation (the permutation HF's conversion script
//     applies is for Meta's interleaved checkpoints);
//   - GQA: query head h reads kv head h / (Hq/Hkv), as HF's repeat_kv;
//   - RMSNorm x · rsqrt(mean x² + eps) · w, HF's LlamaRMSNorm with the same eps;
//   - SwiGLU W2 (silu(W1 x) ⊙ W3 x): W1 = gate_proj, W3 = up_proj, W2 = down_proj, and
//     Mixtral's experts w1/w3/w2 have the same meaning;
//   - untied embeddings (lm_head.weight is remoe's "output").
// Where the forward passes differ (the router), export still writes the folder and returns
// warnings: TopK without renormalisation gates with the raw softmax probabilities where Mixtral
// renormalises over the k; ReLU routing (ReMoE) has no HF architecture — Mixtral's layout holds
// its weights, but Mixtral's forward runs softmax top-k routing on them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autodiff/tensor.h"
#include "train/config.h"

namespace remoe::train {

struct HfModel {
  std::string architecture;           // "LlamaForCausalLM" or "MixtralForCausalLM"
  nlohmann::ordered_json config;      // config.json
  std::vector<Tensor> tensors;        // named with HF names, in file order
  std::vector<std::string> warnings;  // where transformers' forward differs from remoe's
};

// The HF form of a model: `params` are the model's parameters under remoe's names
// (model::Transformer's), each one used exactly once — a parameter the mapping does not know is
// an error, not a tensor silently left out. Non-expert tensors share storage with `params`;
// expert tensors are per-expert copies. `remoe_info` is merged into config.json's "remoe" object.
HfModel to_hf(const TrainConfig& config, const std::vector<Tensor>& params,
              const nlohmann::ordered_json& remoe_info = nlohmann::ordered_json::object());

struct ExportResult {
  std::string checkpoint;  // the checkpoint directory exported
  std::string out_dir;
  std::string architecture;
  int64_t n_tensors = 0;
  std::vector<std::string> warnings;
};

// `checkpoint` is a checkpoint or a run directory (its newest checkpoint). out_dir is created if
// needed; config.json, model.safetensors and README.md in it are replaced. Error when out_dir is
// the checkpoint directory itself (its model.safetensors would be overwritten).
ExportResult export_hf(const std::string& checkpoint, const std::string& out_dir);

}  // namespace remoe::train
