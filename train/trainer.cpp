#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <optional>

#include <nlohmann/json.hpp>

#include "autodiff/ops.h"
#include "autodiff/tape.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/tensorboard.h"

namespace remoe::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Optimizer {
  std::vector<Tensor> m, v;  // AdamW moments, named "<param>.m" / "<param>.v"

  explicit Optimizer(const std::vector<Tensor>& params) {
    for (const Tensor& p : params) {
      m.push_back(Tensor::zeros(p.shape(), p.dtype()).set_name(p.name() + ".m"));
      v.push_back(Tensor::zeros(p.shape(), p.dtype()).set_name(p.name() + ".v"));
    }
  }
  std::vector<Tensor> state() const {
    std::vector<Tensor> all = m;
    all.insert(all.end(), v.begin(), v.end());
    return all;
  }
};

json to_json(const StepRecord& r) {
  json j = {{"step", r.step},           {"loss", r.loss},         {"aux", r.aux},
            {"lr", r.lr},               {"lambda", r.lambda},     {"sparsity", r.sparsity},
            {"grad_norm", r.grad_norm}, {"tokens_per_s", r.tokens_per_s}};
  if (!r.layer_sparsity.empty()) {
    j["layer_sparsity"] = r.layer_sparsity;
    j["expert_load"] = r.expert_load;
  }
  if (r.has_val) {
    j["val_loss"] = r.val_loss;
    j["val_bpb"] = r.val_bpb;
  }
  return j;
}

void print_line(const StepRecord& r, int64_t steps, bool moe) {
  std::printf("step %6lld/%lld | loss %.4f | lr %.2e", (long long)r.step, (long long)steps,
              r.loss, r.lr);
  if (moe) std::printf(" | λ %.3e | sparsity %.4f", r.lambda, r.sparsity);
  std::printf(" | grad norm %.3f | %.0f tok/s", r.grad_norm, r.tokens_per_s);
  if (r.has_val) std::printf(" | val %.4f (%.4f bpb)", r.val_loss, r.val_bpb);
  std::printf("\n");
  std::fflush(stdout);
}

double evaluate(const model::Transformer& model, const TextCorpus& corpus, const TrainConfig& c) {
  NoGradGuard no_grad;
  const int64_t n = int64_t(corpus.bytes.size());
  double total = 0;
  Progress progress("eval", c.eval_batches);
  for (int64_t i = 0; i < c.eval_batches; ++i) {
    const Batch b = fixed_batch(corpus, corpus.train_end, n, c.seq_len, c.batch_size, i, c.eval_batches);
    const model::ForwardOutput out = model.forward(b.inputs, c.batch_size, c.seq_len, 0.0);
    total += ops::cross_entropy(out.logits, b.targets).item();
    progress.update(i + 1);
  }
  return total / double(c.eval_batches);
}

}  // namespace

RunResult run_training(const TrainConfig& config_in,
                       const std::function<void(const StepRecord&)>& on_step) {
  const TrainConfig& c = config_in;
  c.validate();
  REMOE_CHECK(c.model.vocab_size == 256, "model.vocab_size = ", c.model.vocab_size,
              ", but ", c.data_path, " is read as bytes: the vocabulary is 256");
  const bool moe = c.model.ffn == model::FfnKind::moe;
  const bool adaptive_lambda = moe && c.model.router == model::RouterKind::relu;

  const TextCorpus corpus = load_text(c.data_path, c.val_fraction);
  WindowSampler sampler(corpus, 0, corpus.train_end, c.seq_len, c.seed, "train");
  if (c.val_fraction > 0)  // fail at start-up, not at the first evaluation
    (void)fixed_batch(corpus, corpus.train_end, int64_t(corpus.bytes.size()), c.seq_len, c.batch_size, 0, c.eval_batches);

  model::Transformer model(c.model, c.seed);
  const std::vector<Tensor>& params = model.parameters();
  Optimizer optim(params);
  LambdaController lambda{c.lambda0, c.alpha, c.model.target_sparsity()};
  int64_t start = 0;

  fs::create_directories(c.run_dir);
  if (const auto latest = latest_checkpoint(c.run_dir)) {
    const Checkpoint ck = load_checkpoint(*latest);
    copy_by_name(params, ck.model, ck.dir + "/model.safetensors");
    copy_by_name(optim.state(), ck.optimizer, ck.dir + "/optimizer.safetensors");
    start = ck.step;
    lambda.lambda = ck.state.at("lambda").get<double>();
    sampler.set_state(ck.state.at("data_rng").get<std::array<uint64_t, 4>>());
    std::printf("resuming from %s (step %lld, λ %.3e)\n", ck.dir.c_str(), (long long)start, lambda.lambda);
  }
  {
    std::ofstream(fs::path(c.run_dir) / "config.toml") << to_toml(c);
  }
  // Resuming keeps the lines of the steps already taken and drops any written after the
  // checkpoint (a crash between a checkpoint and the next one).
  const fs::path metrics_path = fs::path(c.run_dir) / "metrics.jsonl";
  if (start > 0 && fs::exists(metrics_path)) {
    std::ifstream in(metrics_path);
    std::string kept, line;
    while (std::getline(in, line))
      if (!line.empty() && json::parse(line).value("step", int64_t(0)) <= start) kept += line + "\n";
    in.close();
    std::ofstream(metrics_path) << kept;
  }
  std::ofstream metrics(metrics_path, start > 0 ? std::ios::app : std::ios::trunc);
  REMOE_CHECK(metrics, "cannot write ", metrics_path.string());
  std::optional<EventWriter> tensorboard;
  if (c.tensorboard) tensorboard.emplace((fs::path(c.run_dir) / "tb").string(), start + 1);

  std::printf("%s\n", to_toml(c).c_str());  // the resolved config, as saved in config.toml
  std::printf("remoe train: %s, %lld params (%lld active), %lld steps of %lld×%lld×%lld tokens\n",
              c.data_path.c_str(), (long long)model.n_params(), (long long)model.n_active_params(),
              (long long)c.steps, (long long)c.grad_accum, (long long)c.batch_size, (long long)c.seq_len);

  RunResult result;
  cpu::AdamWHyper hyper{c.lr, c.beta1, c.beta2, c.eps, c.weight_decay};
  for (int64_t step = start; step < c.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    StepRecord r;
    r.step = step + 1;
    r.lr = learning_rate(c, step);
    r.lambda = lambda.lambda;

    size_t n_layers_seen = 0;
    for (int64_t micro = 0; micro < c.grad_accum; ++micro) {
      const Batch b = sampler.next(c.batch_size);
      const model::ForwardOutput out = model.forward(b.inputs, c.batch_size, c.seq_len, lambda.lambda);
      const Tensor ce = ops::cross_entropy(out.logits, b.targets);
      backward(ops::scale(ops::add(ce, out.aux), 1.0 / double(c.grad_accum)));
      r.loss += ce.item() / double(c.grad_accum);
      r.aux += out.aux.item() / double(c.grad_accum);
      if (r.layer_sparsity.empty()) {
        r.layer_sparsity.assign(out.layers.size(), 0.0);
        r.expert_load.assign(out.layers.size(), std::vector<double>(size_t(c.model.experts()), 0.0));
      }
      for (size_t l = 0; l < out.layers.size(); ++l) {
        const model::MoeLayerStats& s = out.layers[l];
        r.layer_sparsity[l] += s.sparsity / double(c.grad_accum);
        double routed = 0;
        for (int32_t n : s.expert_counts) routed += n;
        for (size_t e = 0; e < s.expert_counts.size(); ++e)
          r.expert_load[l][e] += (routed > 0 ? s.expert_counts[e] / routed : 0.0) / double(c.grad_accum);
      }
      n_layers_seen = out.layers.size();
    }
    for (double s : r.layer_sparsity) r.sparsity += s / double(n_layers_seen);

    r.grad_norm = c.grad_clip > 0 ? ops::clip_grad_norm(params, c.grad_clip) : ops::grad_norm(params);
    hyper.lr = r.lr;
    for (size_t i = 0; i < params.size(); ++i) {
      cpu::AdamWHyper h = hyper;
      if (params[i].ndim() < 2) h.weight_decay = 0;
      ops::adamw_step(params[i], optim.m[i], optim.v[i], h, step + 1);
      params[i].zero_grad();
    }
    if (adaptive_lambda) lambda.update(r.sparsity);

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.tokens_per_s = double(c.grad_accum * c.batch_size * c.seq_len) / seconds;
    const bool last = r.step == c.steps;
    if (c.val_fraction > 0 && (last || (c.eval_every > 0 && r.step % c.eval_every == 0))) {
      r.has_val = true;
      r.val_loss = evaluate(model, corpus, c);
      r.val_bpb = r.val_loss / std::numbers::ln2;
      result.final_val_loss = r.val_loss;
    }
    metrics << to_json(r).dump() << "\n" << std::flush;
    if (tensorboard) tensorboard->write_scalars(r.step, step_scalars(r));
    if (r.step % c.log_every == 0 || last || r.has_val) print_line(r, c.steps, moe);
    if (last || (c.checkpoint_every > 0 && r.step % c.checkpoint_every == 0)) {
      const json state = {{"lambda", lambda.lambda}, {"data_rng", sampler.state()},
                          {"seed", c.seed}, {"config", to_toml(c)}};
      save_checkpoint(c.run_dir, r.step, params, optim.state(), state);
    }
    if (on_step) on_step(r);
    result.steps.push_back(std::move(r));
  }
  result.final_lambda = lambda.lambda;
  return result;
}

}  // namespace remoe::train
