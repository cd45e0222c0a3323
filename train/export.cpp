#include "train/export.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "train/checkpoint.h"
#include "train/eval.h"

namespace remoe::train {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

const char* hf_dtype(DType d) {
  switch (d) {
    case DType::f32:
      return "float32";
    case DType::f64:
      return "float64";
    case DType::bf16:
      return "bfloat16";
    case DType::i32:
      break;
  }
  REMOE_FAIL("parameters are floating point, got ", dtype_name(d));
}

// Row i of a (n, ...) tensor as a tensor of its own (a copy).
Tensor slice_first(const Tensor& t, int64_t i) {
  const Tensor host = t.device() == Device::cpu ? t : t.to(Device::cpu);
  Tensor out = Tensor::empty(Shape(host.shape().begin() + 1, host.shape().end()), host.dtype());
  if (out.nbytes() > 0)
    std::memcpy(out.raw(), static_cast<const char*>(host.raw()) + size_t(i) * out.nbytes(),
                out.nbytes());
  return out;
}

// The parameters by remoe name; each may be taken once, and all must be taken.
class ParamTable {
 public:
  explicit ParamTable(const std::vector<Tensor>& params) {
    for (const Tensor& p : params) {
      REMOE_CHECK(p.defined() && !p.name().empty(), "the model has an unnamed parameter");
      REMOE_CHECK(by_name_.emplace(p.name(), p).second, "two parameters are named '", p.name(),
                  "'");
    }
  }

  Tensor take(const std::string& name, const Shape& shape) {
    const auto it = by_name_.find(name);
    REMOE_CHECK(it != by_name_.end(), "the model has no parameter '", name, "'");
    REMOE_CHECK(it->second.shape() == shape, "parameter '", name, "' is ",
                shape_str(it->second.shape()), ", the config says ", shape_str(shape));
    REMOE_CHECK(taken_.insert(name).second, "parameter '", name, "' mapped twice");
    return it->second;
  }

  // Every parameter must have gone somewhere: one the mapping does not know would otherwise be
  // missing from the export without a word.
  void check_all_taken() const {
    for (const auto& [name, t] : by_name_)
      REMOE_CHECK(taken_.count(name), "parameter '", name, "' ", shape_str(t.shape()),
                  " has no Hugging Face name (the export mapping does not know it)");
  }

 private:
  std::map<std::string, Tensor> by_name_;
  std::set<std::string> taken_;
};

// A tensor sharing `t`'s storage under the HF name (the parameter keeps its own name).
Tensor renamed(const Tensor& t, const std::string& hf_name) {
  Tensor v = make_view(t, t.shape());
  v.set_name(hf_name);
  return v;
}

// Why (and whether) transformers' forward of this export differs from remoe's.
std::vector<std::string> differences(const model::ModelConfig& m) {
  if (m.ffn == model::FfnKind::dense) return {};
  if (m.router == model::RouterKind::relu)
    return {
        "model.router = \"relu\" (ReMoE) has no Hugging Face architecture: the export uses "
        "Mixtral's layout and names, but MixtralForCausalLM routes with softmax top-" +
        std::to_string(m.active_experts()) +
        " where remoe's router is ReLU(x W_r^T) with a variable number of active experts per "
        "token; loading it in transformers runs the wrong routing (scripts/compare_hf.py's "
        "patch_moe_routing replaces it with remoe's)"};
  if (!m.renormalize && m.active_experts() < m.experts())
    return {"model.router = \"topk\" with model.renormalize = false: remoe gates the " +
            std::to_string(m.active_experts()) +
            " selected experts with their raw softmax probabilities, Mixtral renormalises them to "
            "sum to 1, so MixtralForCausalLM's forward does not match remoe's (train with "
            "model.renormalize = true for an exact Mixtral; scripts/compare_hf.py's "
            "patch_moe_routing applies remoe's gates)"};
  return {};
}

std::string gate_description(const model::ModelConfig& m) {
  if (m.ffn == model::FfnKind::dense) return "none (dense SwiGLU FFN)";
  if (m.router == model::RouterKind::relu)
    return "relu: gates R = max(x W_r^T, 0) over all experts, a variable number (0..E) active per "
           "token, no softmax, no renormalisation";
  if (m.renormalize)
    return "topk: p = softmax(x W_r^T) over all E, top-k, renormalised over the k (as Mixtral)";
  return "topk: p = softmax(x W_r^T) over all E, top-k, gate = the raw probability (not "
         "renormalised)";
}

constexpr const char* kTokenizerNote =
    "bytes: token id = byte value 0..255 of UTF-8 text; no tokenizer files, no BOS/EOS/PAD tokens";

std::string readme(const HfModel& hf, const TrainConfig& c, const ExportResult& r,
                   int64_t n_params) {
  const model::ModelConfig& m = c.model;
  const bool moe = m.ffn == model::FfnKind::moe;
  std::string s;
  s += "# " + hf.architecture + " exported by remoe\n\n";
  s += "Exported by `remoe export` from `" + r.checkpoint + "`";
  if (hf.config["remoe"].contains("step")) s += " (step " + hf.config["remoe"]["step"].dump() + ")";
  s += ". remoe is a from-scratch trainer for mixture-of-experts language models built around\n"
       "ReMoE (ReLU routing, Wang, Chen, Zhu, ICLR 2025).\n\n";
  s += "| | |\n|---|---|\n";
  s += str_cat("| architecture | `", hf.architecture, "` |\n");
  s += str_cat("| layers · d_model · heads / kv heads | ", m.n_layers, " · ", m.d_model, " · ",
               m.n_heads, " / ", m.n_kv_heads, " |\n");
  if (moe)
    s +=
        str_cat("| FFN | MoE, every layer: ", m.experts(), " SwiGLU experts of ", m.expert_d_ffn(),
                ", router ", m.router == model::RouterKind::relu ? "ReLU (ReMoE)" : "softmax top-k",
                ", k = ", m.active_experts(), " |\n");
  else
    s += str_cat("| FFN | dense SwiGLU, ", m.d_ffn, " |\n");
  s += str_cat("| parameters | ", n_params, " (", dtype_name(hf.tensors.front().dtype()), ") |\n");
  s += str_cat("| vocabulary | 256 (bytes) |\n| trained context | ", c.seq_len, " bytes |\n\n");

  s += "## Loading\n\n```python\nimport torch\nfrom transformers import AutoModelForCausalLM\n\n"
       "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
       "ids = torch.tensor([list(\"ROMEO:\".encode(\"utf-8\"))])\n"
       "logits = model(ids).logits  # (1, 6, 256): the next byte's logits at each position\n"
       "out = model.generate(ids, max_new_tokens=200, do_sample=True, top_k=0)\n"
       "print(bytes(out[0].tolist()).decode(\"utf-8\", errors=\"replace\"))\n```\n\n";

  s += "## Tokenizer: bytes\n\n"
       "There are no tokenizer files. The model reads UTF-8 text as bytes: token id = byte value\n"
       "(0..255), no BOS, EOS or padding tokens (config.json sets none, so `generate` stops only\n"
       "at `max_new_tokens`). Encode with `list(text.encode(\"utf-8\"))`, decode with\n"
       "`bytes(ids).decode(\"utf-8\", errors=\"replace\")` (a generated sequence may end inside a\n"
       "multi-byte character).\n\n";

  s += "## Does transformers compute what remoe computed?\n\n";
  if (hf.warnings.empty()) {
    s += std::string(
             "Yes, up to float rounding: the attention (RoPE rotate-half, grouped-query), "
             "RMSNorm, SwiGLU and ") +
         (moe ? "routing (softmax over all experts, top-k, renormalised over the k)"
              : "untied output projection") +
         " are the same functions. `scripts/compare_hf.py` in the remoe repository checks the "
         "logits against remoe's.\n";
  } else {
    s += "**No** — the weights are complete, but the router differs:\n\n";
    for (const std::string& w : hf.warnings) s += "- " + w + "\n";
    s += "\nremoe's gate: " + gate_description(m) +
         ". To run remoe's forward in transformers, replace the forward of every "
         "`MixtralSparseMoeBlock` with one that computes these gates and "
         "y = Σ_e gate_e · w2_e(silu(w1_e x) ⊙ w3_e x); `patch_moe_routing(model, config)` "
         "(config: this folder's config.json as a dict) in remoe's `scripts/compare_hf.py` does "
         "exactly that.\n";
  }
  s += "\nThe \"remoe\" object in config.json records the router, renormalisation, granularity,\n"
       "the sparsity regulariser's final λ and the training step.\n";
  return s;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  REMOE_CHECK(out, "cannot write ", path.string());
  out << text;
  out.close();
  REMOE_CHECK(out, "writing ", path.string(), " failed");
}

}  // namespace

HfModel to_hf(const TrainConfig& c, const std::vector<Tensor>& params, const ojson& remoe_info) {
  const model::ModelConfig& m = c.model;
  m.validate();
  const bool moe = m.ffn == model::FfnKind::moe;
  const int64_t d = m.d_model, hd = m.head_dim(), V = m.vocab_size;
  REMOE_CHECK(!params.empty(), "the model has no parameters");
  HfModel hf;
  hf.architecture = moe ? "MixtralForCausalLM" : "LlamaForCausalLM";
  hf.warnings = differences(m);

  ParamTable p(params);
  auto add = [&](const std::string& remoe_name, const Shape& shape, const std::string& hf_name) {
    hf.tensors.push_back(renamed(p.take(remoe_name, shape), hf_name));
  };
  add("tok_embeddings", {V, d}, "model.embed_tokens.weight");
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const std::string r = "layers." + std::to_string(i) + ".";
    const std::string h = "model.layers." + std::to_string(i) + ".";
    add(r + "attention_norm", {d}, h + "input_layernorm.weight");
    add(r + "attention.wq", {m.n_heads * hd, d}, h + "self_attn.q_proj.weight");
    add(r + "attention.wk", {m.n_kv_heads * hd, d}, h + "self_attn.k_proj.weight");
    add(r + "attention.wv", {m.n_kv_heads * hd, d}, h + "self_attn.v_proj.weight");
    add(r + "attention.wo", {d, m.n_heads * hd}, h + "self_attn.o_proj.weight");
    add(r + "ffn_norm", {d}, h + "post_attention_layernorm.weight");
    if (!moe) {
      add(r + "ffn.w1", {m.d_ffn, d}, h + "mlp.gate_proj.weight");
      add(r + "ffn.w3", {m.d_ffn, d}, h + "mlp.up_proj.weight");
      add(r + "ffn.w2", {d, m.d_ffn}, h + "mlp.down_proj.weight");
      continue;
    }
    const int64_t E = m.experts(), F = m.expert_d_ffn();
    const std::string b = h + "block_sparse_moe.";
    add(r + "moe.router", {E, d}, b + "gate.weight");
    const Tensor w1 = p.take(r + "moe.w1", {E, F, d});
    const Tensor w3 = p.take(r + "moe.w3", {E, F, d});
    const Tensor w2 = p.take(r + "moe.w2", {E, d, F});
    for (int64_t e = 0; e < E; ++e) {
      const std::string x = b + "experts." + std::to_string(e) + ".";
      hf.tensors.push_back(slice_first(w1, e).set_name(x + "w1.weight"));
      hf.tensors.push_back(slice_first(w2, e).set_name(x + "w2.weight"));
      hf.tensors.push_back(slice_first(w3, e).set_name(x + "w3.weight"));
    }
  }
  add("norm", {d}, "model.norm.weight");
  add("output", {V, d}, "lm_head.weight");
  p.check_all_taken();
  const DType dtype = hf.tensors.front().dtype();
  for (const Tensor& t : hf.tensors)
    REMOE_CHECK(t.dtype() == dtype, "tensor ", t.name(), " is ", dtype_name(t.dtype()),
                ", the others ", dtype_name(dtype), " (config.json has one torch_dtype)");

  ojson& j = hf.config;
  j["architectures"] = {hf.architecture};
  j["model_type"] = moe ? "mixtral" : "llama";
  j["vocab_size"] = V;
  j["hidden_size"] = d;
  j["intermediate_size"] = moe ? m.expert_d_ffn() : m.d_ffn;
  j["num_hidden_layers"] = m.n_layers;
  j["num_attention_heads"] = m.n_heads;
  j["num_key_value_heads"] = m.n_kv_heads;
  j["head_dim"] = hd;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.seq_len;
  j["rms_norm_eps"] = m.norm_eps;
  j["rope_theta"] = m.rope_base;
  // transformers ≥ 5 reads RoPE from rope_parameters (and still accepts rope_theta).
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", m.rope_base}};
  j["initializer_range"] = m.init_std;
  j["attention_dropout"] = 0.0;
  j["tie_word_embeddings"] = false;
  j["use_cache"] = true;
  // Bytes have no special tokens; HF's defaults (1 and 2) would stop generation at byte 0x02.
  j["bos_token_id"] = nullptr;
  j["eos_token_id"] = nullptr;
  j["pad_token_id"] = nullptr;
  if (moe) {
    j["num_local_experts"] = m.experts();
    j["num_experts_per_tok"] = m.active_experts();
    j["router_aux_loss_coef"] = m.router == model::RouterKind::topk ? m.aux_coeff : 0.0;
    j["output_router_logits"] = false;
    j["router_jitter_noise"] = 0.0;
    j["sliding_window"] = nullptr;
  } else {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  }
  j["torch_dtype"] = hf_dtype(dtype);
  j["dtype"] = hf_dtype(dtype);  // the name transformers ≥ 4.56 uses

  ojson info = ojson::object();
  info["ffn"] = moe ? "moe" : "dense";
  if (moe) {
    info["router"] = m.router == model::RouterKind::relu ? "relu" : "topk";
    info["renormalize"] = m.router == model::RouterKind::topk && m.renormalize;
    info["gate"] = gate_description(m);
    info["n_experts"] = m.n_experts;
    info["top_k"] = m.top_k;
    info["granularity"] = m.granularity;
    info["target_sparsity"] = m.target_sparsity();
  }
  info["hf_forward_matches"] = hf.warnings.empty();
  info["warnings"] = hf.warnings;
  info["tokenizer"] = kTokenizerNote;
  for (const auto& [k, v] : remoe_info.items()) info[k] = v;
  j["remoe"] = std::move(info);
  return hf;
}

ExportResult export_hf(const std::string& checkpoint, const std::string& out_dir) {
  REMOE_CHECK(!out_dir.empty(), "--out DIR is required");
  const CheckpointModel m = load_checkpoint_model(checkpoint);
  const model::ModelConfig& mc = m.config.model;
  REMOE_CHECK(mc.ffn == model::FfnKind::dense || mc.router == model::RouterKind::relu ||
                  mc.router == model::RouterKind::topk,
              "remoe export: ", m.dir, " routes with model.router = \"",
              mc.router == model::RouterKind::hash ? "hash" : "expert_choice",
              "\", which no Hugging Face MoE architecture (nor Mixtral's layout) can express; ",
              "only relu and topk models export");
  REMOE_CHECK(mc.ffn == model::FfnKind::dense || !mc.expert_bias,
              "remoe export: ", m.dir, " selects experts with a learned-by-counting bias ",
              "(model.expert_bias = true), which Mixtral's router has no place for");
  ExportResult r;
  r.checkpoint = m.dir;
  r.out_dir = out_dir;

  std::error_code ec;
  const fs::path out(out_dir);
  REMOE_CHECK(!fs::exists(out, ec) || fs::is_directory(out, ec), "--out ", out_dir,
              " exists and is not a directory");
  REMOE_CHECK(!(fs::exists(out, ec) && fs::equivalent(out, m.dir, ec)), "--out ", out_dir,
              " is the checkpoint directory itself; its model.safetensors would be overwritten");
  try {
    fs::create_directories(out);
  } catch (const fs::filesystem_error& e) {
    REMOE_FAIL("cannot create --out ", out_dir, ": ", e.what());
  }

  const HfModel hf = to_hf(m.config, m.model.parameters(),
                           {{"source_checkpoint", m.dir}, {"step", m.step}, {"lambda", m.lambda}});
  r.architecture = hf.architecture;
  r.n_tensors = int64_t(hf.tensors.size());
  r.warnings = hf.warnings;
  save_safetensors((out / "model.safetensors").string(), hf.tensors, {{"format", "pt"}});
  write_text(out / "config.json", hf.config.dump(2) + "\n");
  write_text(out / "README.md", readme(hf, m.config, r, m.model.n_params()));
  return r;
}

}  // namespace remoe::train
