#include "train/eval.h"

#include <bit>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "autodiff/ops.h"
#include "autodiff/tape.h"
#include "train/checkpoint.h"
#include "train/router_state.h"
#include "train/data.h"

namespace remoe::train {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little,
              "--dump-logits writes host floats as little-endian");

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(fs::path(path) / "COMPLETE", ec)) return path;
  REMOE_CHECK(fs::is_directory(path, ec), path,
              " does not exist (expected a checkpoint or a run directory)");
  const auto latest = latest_checkpoint(path);
  REMOE_CHECK(latest, path,
              " is neither a checkpoint (no COMPLETE file) nor a run directory with a complete one "
              "under checkpoints/");
  return *latest;
}

CheckpointModel load_checkpoint_model(const std::string& path) {
  const std::string dir = resolve_checkpoint(path);
  const Checkpoint ck = load_checkpoint(dir);
  const std::string state_path = dir + "/state.json";
  REMOE_CHECK(ck.state.contains("config") && ck.state["config"].is_string(), state_path,
              " has no \"config\" string (the run's resolved TOML config)");
  const TrainConfig config =
      parse_config(ck.state["config"].get<std::string>(), state_path + " \"config\"", {});
  double lambda = 0;
  if (ck.state.contains("lambda")) {
    REMOE_CHECK(ck.state["lambda"].is_number(), state_path, ": \"lambda\" is ",
                ck.state["lambda"].dump(), ", expected a number");
    lambda = ck.state["lambda"].get<double>();
  }
  CheckpointModel m{dir, ck.step, lambda, config, model::Transformer(config.model, 0)};
  restore_router_state(m.model.router_state(), ck.state, state_path);
  copy_by_name(m.model.parameters(), ck.model, dir + "/model.safetensors");
  // On this machine's GPU when it has one (whatever device the run trained on), at the run's
  // train.precision (auto: bf16 on a GPU).
  const Device device = resolve_device(DeviceChoice::auto_);
  m.model.to(device);
  m.model.set_precision(resolve_precision(config.precision, device));
  return m;
}

nlohmann::ordered_json EvalResult::to_json() const {
  return {{"checkpoint", checkpoint},
          {"step", step},
          {"text", text},
          {"split", split},
          {"batches", batches},
          {"batch_size", batch_size},
          {"seq_len", seq_len},
          {"tokens", tokens},
          {"loss", loss},
          {"bpb", bpb},
          {"layer_sparsity", layer_sparsity},
          {"expert_load", expert_load}};
}

std::string EvalResult::line() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, " | %lld×%lld×%lld bytes | loss %.6f nats/byte | %.6f bits/byte",
                (long long)batches, (long long)batch_size, (long long)seq_len, loss, bpb);
  std::string sparsity;
  for (size_t l = 0; l < layer_sparsity.size(); ++l) {
    char s[32];
    std::snprintf(s, sizeof s, "%s%.4f", l ? " " : " | sparsity per layer ", layer_sparsity[l]);
    sparsity += s;
  }
  return str_cat("eval ", checkpoint, " (step ", step, ") on ", text, " (", split, ")", buf, sparsity);
}

namespace {

void dump_logits(const std::string& path, const Tensor& device_logits, const Tensor& inputs,
                 int64_t seq_len, const CheckpointModel& m) {
  const Tensor logits = device_logits.to(Device::cpu);
  const int64_t vocab = logits.dim(1);
  REMOE_CHECK(logits.dtype() == DType::f32, "--dump-logits writes f32, the model's logits are ",
              dtype_name(logits.dtype()));
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    REMOE_CHECK(out, "cannot write --dump-logits file ", path);
    out.write(static_cast<const char*>(logits.raw()),
              std::streamsize(seq_len * vocab * sizeof(float)));
    out.close();
    REMOE_CHECK(out, "writing ", path, " failed");
  }
  const std::vector<int32_t> all = inputs.to_vector<int32_t>();
  const nlohmann::ordered_json side = {
      {"shape", {seq_len, vocab}},
      {"dtype", "float32"},
      {"byte_order", "little"},
      {"input_ids", std::vector<int32_t>(all.begin(), all.begin() + seq_len)},
      {"checkpoint", m.dir},
      {"step", m.step}};
  std::ofstream out(path + ".json", std::ios::trunc);
  REMOE_CHECK(out, "cannot write ", path, ".json");
  out << side.dump() << "\n";
  out.close();
  REMOE_CHECK(out, "writing ", path, ".json failed");
}

}  // namespace

EvalResult evaluate_checkpoint(const std::string& checkpoint, const EvalOptions& o) {
  REMOE_CHECK(o.batches >= 0,
              "batches must be at least 1 (or 0 for the config's eval.batches), got ", o.batches);
  const CheckpointModel m = load_checkpoint_model(checkpoint);
  const TrainConfig& c = m.config;

  EvalResult r;
  r.checkpoint = m.dir;
  r.step = m.step;
  r.batches = o.batches > 0 ? o.batches : c.eval_batches;
  r.batch_size = c.batch_size;
  r.seq_len = c.seq_len;
  r.tokens = r.batches * r.batch_size * r.seq_len;

  // The run's own validation split, read exactly as the trainer reads it (any data format), or
  // all of a text file read as bytes.
  Corpus corpus;
  const TokenSource* source = nullptr;
  int64_t begin = 0;
  const char* split_name = "all";
  bool within_documents = false;
  if (o.text.empty()) {
    REMOE_CHECK(c.val_fraction > 0 || !c.val_path.empty(), "the run of ", m.dir,
                " has no validation split (data.val_fraction = 0); pass --text FILE");
    corpus = load_corpus(c.data_format, c.data_path, c.val_path, c.val_fraction);
    check_vocabulary(corpus, c.data_format, c.model.vocab_size);
    source = &corpus.val;
    begin = corpus.val_begin;
    split_name = "validation";
    within_documents = c.within_documents;
    r.text = c.val_path.empty() ? c.data_path : c.val_path;
  } else {
    REMOE_CHECK(c.model.vocab_size == 256, m.dir, " holds a model with vocabulary ",
                c.model.vocab_size, "; --text reads a file as bytes (256)");
    corpus = load_text(o.text, 0.0);
    source = &corpus.train;
    r.text = o.text;
  }
  r.split = split_name;
  const int64_t end = source->size();

  // The trainer's evaluation, step for step: the mean over batches of each batch's mean
  // cross-entropy, summed in the same order, so the two agree to the last bit.
  NoGradGuard no_grad;
  double total = 0;
  std::vector<std::vector<double>> counts;  // per MoE layer, per expert, over every batch
  for (int64_t i = 0; i < r.batches; ++i) {
    const Batch b = fixed_batch(*source, begin, end, c.seq_len, c.batch_size, i, r.batches,
                                split_name, within_documents)
                        .to(m.model.device());
    const model::ForwardOutput out = m.model.forward(b.inputs, c.batch_size, c.seq_len, 0.0);
    total += ops::cross_entropy(out.logits, b.targets).item();
    counts.resize(out.layers.size());
    for (size_t l = 0; l < out.layers.size(); ++l) {
      const std::vector<int32_t>& c_e = out.layers[l].expert_counts;
      counts[l].resize(c_e.size(), 0.0);
      for (size_t e = 0; e < c_e.size(); ++e) counts[l][e] += double(c_e[e]);
    }
    if (i == 0 && !o.dump_logits.empty())
      dump_logits(o.dump_logits, out.logits, b.inputs, c.seq_len, m);
  }
  r.loss = total / double(r.batches);
  for (const std::vector<double>& layer : counts) {
    double active = 0;
    for (double c_e : layer) active += c_e;
    r.layer_sparsity.push_back(1.0 - active / (double(r.tokens) * double(layer.size())));
    std::vector<double>& load = r.expert_load.emplace_back();
    for (double c_e : layer) load.push_back(active > 0 ? c_e / active : 0.0);
  }
  r.bpb = r.loss / std::numbers::ln2;
  return r;
}

}  // namespace remoe::train
