#include "train/trainer.h"

#include <signal.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>
#include <mutex>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "autodiff/ops.h"
#include "autodiff/device.h"
#include "autodiff/tape.h"
#include "dist/data_parallel.h"
#include "dist/zero.h"
#include "kernels/nvtx.h"
#include "model/transformer.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/phase_timer.h"
#include "train/progress.h"
#include "train/router_state.h"
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

// The rank-order sum of each value over the ranks (every rank gets the same numbers).
std::vector<double> sum_over_ranks(dist::Communicator& comm, const std::vector<double>& values) {
  Tensor t = Tensor::from_vector<double>({int64_t(values.size())}, values);
  if (comm.device() != Device::cpu) t = t.to(comm.device());
  comm.all_reduce(t, dist::ReduceOp::sum);
  return t.to_vector<double>();
}

json to_json(const StepRecord& r) {
  json j = {{"step", r.step},           {"loss", r.loss},         {"aux", r.aux},
            {"lr", r.lr},               {"lambda", r.lambda},     {"sparsity", r.sparsity},
            {"grad_norm", r.grad_norm}, {"tokens_per_s", r.tokens_per_s}};
  if (!r.layer_sparsity.empty()) {
    j["layer_sparsity"] = r.layer_sparsity;
    j["expert_load"] = r.expert_load;
  }
  if (!r.dropped_fraction.empty()) j["dropped_fraction"] = r.dropped_fraction;
  if (r.z_loss) j["z_loss"] = *r.z_loss;
  if (r.gpu_memory_peak) j["gpu_memory_peak"] = *r.gpu_memory_peak;
  if (!r.phase_seconds.empty()) {
    json phases = json::object();  // milliseconds by phase
    for (const auto& [phase, seconds] : r.phase_seconds) phases[phase] = seconds * 1e3;
    j["phase_ms"] = phases;
  }
  if (!r.router_bias.empty()) j["router_bias"] = r.router_bias;
  if (r.has_val) {
    j["val_loss"] = r.val_loss;
    j["val_bpb"] = r.val_bpb;
  }
  if (r.skipped) {  // (a non-finite number is written as null: JSON has no NaN)
    j["skipped"] = true;
    j["skip_reason"] = r.skip_reason;
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

void print_skip_line(const StepRecord& r, int64_t steps, int64_t in_a_row, int64_t max_skips) {
  std::printf("step %6lld/%lld | skipped: %s, no update (%lld in a row, the run stops at %lld)\n",
              (long long)r.step, (long long)steps, r.skip_reason.c_str(), (long long)in_a_row,
              (long long)max_skips);
  std::fflush(stdout);
}

// Why a step must not update anything, or "" when its numbers are finite.
std::string non_finite_reason(const StepRecord& r) {
  if (!std::isfinite(r.loss)) return str_cat("loss is ", r.loss);
  if (!std::isfinite(r.aux)) return str_cat("aux loss is ", r.aux);
  if (!std::isfinite(r.grad_norm)) return str_cat("grad norm is ", r.grad_norm);
  return "";
}

// SIGINT/SIGTERM while training: the handler only records the signal (all it may do safely);
// the loop checks after each step. SA_RESETHAND puts the default action back on the first
// delivery, so a second signal stops the process at once (a save that hangs can still be
// interrupted). The previous handlers are restored when training returns. Handlers belong to
// the process: when ranks run as threads of one process (tests), the first to start installs
// them and the last to finish restores them.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void record_stop_signal(int sig) { g_stop_signal = sig; }

class StopSignals {
 public:
  StopSignals() {
    const std::lock_guard lock(mutex_);
    if (users_++ > 0) return;
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = record_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    for (size_t i = 0; i < kSignals.size(); ++i)
      if (::sigaction(kSignals[i], &sa, &old_[i]) != 0) {
        --users_;
        REMOE_FAIL("cannot install a handler for ", signal_name(kSignals[i]), ": ",
                   std::strerror(errno));
      }
  }
  ~StopSignals() {
    const std::lock_guard lock(mutex_);
    if (--users_ > 0) return;
    for (size_t i = 0; i < kSignals.size(); ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  static int received() { return g_stop_signal; }
  static const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

 private:
  static constexpr std::array<int, 2> kSignals{SIGINT, SIGTERM};
  static inline std::mutex mutex_;
  static inline int users_ = 0;
  static inline std::array<struct sigaction, 2> old_{};
};

// The mean validation loss over eval_batches fixed batches. Rank r of W takes batches
// r, r + W, ...; the per-rank sums are added over ranks.
// With expert parallelism a forward pass is a collective, so every rank runs as many: a rank
// past the last batch runs batch 0 again and counts nothing.
double evaluate(const model::Transformer& model, const Corpus& corpus, const TrainConfig& c,
                dist::Communicator& comm) {
  const NvtxRange range("eval");
  NoGradGuard no_grad;
  const int64_t rank = comm.rank(), world = comm.world_size();
  const int64_t rounds = model.expert_parallel().enabled() ? (c.eval_batches + world - 1) / world
                                                           : (c.eval_batches - rank + world - 1) / world;
  double total = 0;
  Progress progress("eval", c.eval_batches);
  for (int64_t j = 0; j < rounds; ++j) {
    const int64_t i = j * world + rank;
    const bool counts = i < c.eval_batches;
    const Batch b = fixed_batch(corpus.val, corpus.val_begin, corpus.val.size(), c.seq_len,
                                c.batch_size, counts ? i : 0, c.eval_batches, "validation",
                                c.within_documents)
                        .to(model.device());
    const model::ForwardOutput out = model.forward(b.inputs, c.batch_size, c.seq_len, 0.0);
    const double loss = ops::cross_entropy(out.logits, b.targets).item();
    if (counts) total += loss;
    if (rank == 0) progress.update(std::min(i + 1, c.eval_batches));
  }
  if (world > 1) total = sum_over_ranks(comm, {total})[0];
  return total / double(c.eval_batches);
}

// λ and the data sampler's state from a checkpoint's state.json, checked (restore copies
// nothing until everything is known to be good).
struct ResumeState {
  double lambda = 0;
  std::array<uint64_t, 4> data_rng{};
};

ResumeState read_resume_state(const Checkpoint& ck) {
  const std::string where = ck.dir + "/state.json";
  const json& st = ck.state;
  ResumeState out;
  REMOE_CHECK(st.contains("lambda"), where, ": has no \"lambda\"");
  const json& l = st["lambda"];
  REMOE_CHECK(l.is_number() && std::isfinite(l.get<double>()) && l.get<double>() > 0, where,
              ": \"lambda\" is ", l.dump(), ", expected a positive finite number");
  out.lambda = l.get<double>();
  REMOE_CHECK(st.contains("data_rng"), where, ": has no \"data_rng\"");
  const json& rng = st["data_rng"];
  REMOE_CHECK(rng.is_array() && rng.size() == 4 &&
                  std::all_of(rng.begin(), rng.end(), [](const json& x) { return x.is_number_unsigned(); }),
              where, ": \"data_rng\" is ", rng.dump(), ", expected 4 unsigned 64-bit integers");
  for (size_t i = 0; i < 4; ++i) out.data_rng[i] = rng[i].get<uint64_t>();
  return out;
}

// Expert parallelism and checkpoints: a checkpoint always holds whole tensors, so it does
// not depend on how the experts were spread. `sharded[i]` marks the tensors that hold a
// rank's block of L experts along dimension 0.
struct Sharding {
  std::vector<bool> sharded;
  dist::Communicator* comm = nullptr;  // null: nothing is sharded
  int64_t first = 0, local = 0;        // this rank's experts [first, first + local)
  int64_t experts = 0;                 // E

  Shape full_shape(const Tensor& t) const {
    Shape s = t.shape();
    s[0] = experts;
    return s;
  }
  // The tensors as a checkpoint holds them: sharded ones all-gathered (a collective: every
  // rank calls it) into their full (E, ...) shape, under the same name.
  std::vector<Tensor> gather(const std::vector<Tensor>& ts) const {
    if (!comm) return ts;
    std::vector<Tensor> out;
    for (size_t i = 0; i < ts.size(); ++i) {
      if (!sharded[i]) {
        out.push_back(ts[i]);
        continue;
      }
      Tensor full = Tensor::empty(full_shape(ts[i]), ts[i].dtype(), ts[i].device());
      comm->all_gather(full, ts[i]);
      full.set_name(ts[i].name());
      out.push_back(full);
    }
    return out;
  }
  // Tensors to load a checkpoint into: fresh full-shape ones for the sharded, else the tensors.
  std::vector<Tensor> full_like(const std::vector<Tensor>& ts) const {
    if (!comm) return ts;
    std::vector<Tensor> out;
    for (size_t i = 0; i < ts.size(); ++i)
      out.push_back(sharded[i] ? Tensor::empty(full_shape(ts[i]), ts[i].dtype(), ts[i].device())
                                     .set_name(ts[i].name())
                               : ts[i]);
    return out;
  }
  // Copies this rank's block of each loaded full tensor into the sharded tensor.
  void keep_slices(const std::vector<Tensor>& ts, const std::vector<Tensor>& full) const {
    if (!comm) return;
    for (size_t i = 0; i < ts.size(); ++i) {
      if (!sharded[i]) continue;
      const size_t block = ts[i].nbytes();  // L rows
      device::copy(ts[i].raw(), ts[i].device(),
                   static_cast<const char*>(full[i].raw()) + size_t(first) * (block / size_t(local)),
                   full[i].device(), block);
    }
  }
};

// AdamW's weight decay per parameter: none on the 1-D ones (norms).
std::vector<bool> decay_flags(const std::vector<Tensor>& params) {
  std::vector<bool> d;
  for (const Tensor& p : params) d.push_back(p.ndim() >= 2);
  return d;
}

std::map<std::string, Tensor> by_name(const std::vector<Tensor>& ts) {
  std::map<std::string, Tensor> out;
  for (const Tensor& t : ts) out.emplace(t.name(), t);
  return out;
}

// ZeRO-1 (dist.zero1): AdamW's moments sharded over the ranks that share their parameters
// (dist/zero.h), so each moment lives on one of them. Without expert parallelism one
// ShardedAdamW over the job holds every parameter's. With it, one over the job holds the
// replicated parameters' and one over the expert block's replicas (ranks r mod P + k·P; a
// world of one when P = W) holds the rank's experts'. Checkpoints hold whole moments either
// way, named and ordered as the unsharded optimizer's (m of every parameter, then v).
class Zero1 {
 public:
  // replicated and experts: the parameters in params' order (experts empty without expert
  // parallelism); blocks: how expert tensors are sharded (Sharding::comm null without).
  Zero1(dist::Communicator& job, dist::Communicator* replicas, const std::vector<Tensor>& params,
        const std::vector<Tensor>& replicated, const std::vector<Tensor>& experts,
        const Sharding& blocks)
      : main_(job, replicated, decay_flags(replicated)) {
    for (const char* suffix : {".m", ".v"})
      for (const Tensor& p : params) order_.push_back(p.name() + suffix);
    if (experts.empty()) return;
    experts_.emplace(replicas ? *replicas : alone_, experts, decay_flags(experts));
    blocks_ = blocks;
    blocks_.sharded.assign(2 * experts.size(), true);  // every moment of an expert
  }

  void step(const cpu::AdamWHyper& hyper, int64_t step) {
    main_.step(hyper, step);
    if (experts_) experts_->step(hyper, step);
  }
  void move_to(Device device) {
    main_.move_to(device);
    if (experts_) experts_->move_to(device);
  }

  // Whole moments (collectives over the job and, with experts, over their group).
  std::vector<Tensor> gather_state() const {
    std::vector<Tensor> all = main_.gather_state();
    if (experts_) {
      std::vector<Tensor> local = experts_->gather_state();  // (L, ...) on the CPU
      const Device dev = blocks_.comm->device();
      for (Tensor& t : local)
        if (dev != Device::cpu) t = t.to(dev).set_name(t.name());
      for (const Tensor& t : blocks_.gather(local)) all.push_back(t);
    }
    return in_order(all);
  }
  // Zero tensors of the whole moments' names and shapes, to load a checkpoint into.
  std::vector<Tensor> empty_state() const {
    std::vector<Tensor> all = main_.empty_state();
    if (experts_)
      for (const Tensor& t : blocks_.full_like(experts_->empty_state())) all.push_back(t);
    return in_order(all);
  }
  // Keeps this rank's share of whole moments laid out as empty_state() returns them.
  void load_state(const std::vector<Tensor>& full) {
    const std::map<std::string, Tensor> named = by_name(full);
    const auto pick = [&](const std::vector<Tensor>& like) {
      std::vector<Tensor> out;
      for (const Tensor& t : like) out.push_back(named.at(t.name()));
      return out;
    };
    main_.load_state(pick(main_.empty_state()));
    if (!experts_) return;
    const std::vector<Tensor> local = experts_->empty_state();
    blocks_.keep_slices(local, pick(local));
    experts_->load_state(local);
  }

 private:
  std::vector<Tensor> in_order(const std::vector<Tensor>& ts) const {
    const std::map<std::string, Tensor> named = by_name(ts);
    std::vector<Tensor> out;
    for (const std::string& n : order_) out.push_back(named.at(n));
    return out;
  }

  dist::Single alone_;  // the experts' replicas when there are none; before the optimizers
  dist::ShardedAdamW main_;
  std::optional<dist::ShardedAdamW> experts_;
  Sharding blocks_;
  std::vector<std::string> order_;
};

}  // namespace

bool may_change_on_resume(std::string_view key) {
  // The optimizer's hyper-parameters may change (a lower optim.lr after a loss spike is the
  // usual reason to restart): the run then differs from an uninterrupted one, knowingly.
  // Evaluation, checkpointing and logging only observe the run; train.steps extends or
  // shortens it and train.max_skips only decides when to give up.
  // dist.* only says how the ranks split the work (checkpoints hold whole tensors), and
  // train.device and train.precision where and how precisely it computes (checkpoints are f32
  // on the host): a CPU run may go on on a GPU.
  for (std::string_view prefix : {"optim.", "eval.", "checkpoint.", "log.", "dist."})
    if (key.starts_with(prefix)) return true;
  return key == "train.steps" || key == "train.max_skips" || key == "train.device" ||
         key == "train.precision";
}

void check_resume_config(const std::string& dir, const TrainConfig& saved,
                         const TrainConfig& current) {
  std::string problems;
  for (const ConfigDifference& d : config_differences(saved, current)) {
    if (may_change_on_resume(d.key)) continue;
    problems += str_cat(problems.empty() ? "" : "; ", d.key, " = ", d.a, ", this run has ", d.b);
  }
  REMOE_CHECK(problems.empty(), "checkpoint ", dir, " was made with ", problems,
              " (these keys must not change when a run resumes; use another log.run_dir to ",
              "start a new run)");
}

RunResult run_training(const TrainConfig& config, const std::function<void(const StepRecord&)>& on_step,
                       const TrainingHooks& hooks) {
  dist::Single single;
  return run_training(config, single, on_step, hooks);
}

RunResult run_training(const TrainConfig& config_in, dist::Communicator& comm,
                       const std::function<void(const StepRecord&)>& on_step,
                       const TrainingHooks& hooks) {
  const TrainConfig& c = config_in;
  c.validate();
  const int rank = comm.rank(), world = comm.world_size();
  c.validate_world(world);
  const bool lead = rank == 0;  // writes the run directory and prints
  const bool moe = c.model.ffn == model::FfnKind::moe;
  const bool adaptive_lambda = moe && c.model.router == model::RouterKind::relu;
  // One step: grad_accum micro-batches on each of the W ranks, in the order one process with
  // W · grad_accum micro-batches would take them (rank r gets numbers r·A .. r·A + A − 1).
  const int64_t micro_total = c.grad_accum * world;

  const Corpus corpus = load_corpus(c.data_format, c.data_path, c.val_path, c.val_fraction);
  check_vocabulary(corpus, c.data_format, c.model.vocab_size);
  WindowSampler sampler(corpus.train, 0, corpus.train_end, c.seq_len, c.seed, "train",
                        c.within_documents);
  if (corpus.has_validation())  // fail at start-up, not at the first evaluation
    (void)fixed_batch(corpus.val, corpus.val_begin, corpus.val.size(), c.seq_len, c.batch_size, 0,
                      c.eval_batches, "validation", c.within_documents);

  // Expert parallel (dist.expert_parallel = P): the job's ranks form groups of P consecutive
  // ranks (r / P names the group: one node's GPUs, where the all-to-alls are cheapest), each
  // rank holding E / P experts of every layer. With W > P the W / P groups are data-parallel
  // copies of each other, and rank r's experts have replicas on the ranks r % P + k·P.
  // Both groups are splits of the job (collectives), made before the model that uses them.
  dist::ExpertParallel ep;
  std::unique_ptr<dist::Communicator> ep_group, expert_replicas;
  if (c.expert_parallel > 1 && c.expert_parallel < world) {
    ep_group = comm.split(rank / int(c.expert_parallel), rank);
    expert_replicas = comm.split(rank % int(c.expert_parallel), rank);
  }
  if (c.expert_parallel > 1) ep.comm = ep_group ? ep_group.get() : &comm;
  model::Transformer model(c.model, c.seed, DType::f32, ep);
  if (const std::string w = model::routing_warning(c.model); lead && !w.empty())
    std::fprintf(stderr, "%s\n", w.c_str());
  const std::vector<Tensor>& params = model.parameters();
  // A real communicator runs the reductions even for a job of one rank (so a one-GPU NCCL run
  // exercises them); only the world of one process, dist::Single, skips them.
  const bool reduce = world > 1 || dynamic_cast<dist::Single*>(&comm) == nullptr;
  // The whole moments, unless ZeRO-1 shards them (below): then this holds none.
  Optimizer optim(c.zero1 && reduce ? std::vector<Tensor>{} : params);
  LambdaController lambda{c.lambda0, c.alpha, c.model.target_sparsity()};
  // Replicated parameters have their gradients all-reduced over the job. An expert's gradient
  // already sums its group's tokens (the all-to-all's backward brings them to its owner); the
  // copies of the expert in the other groups add theirs (a second set of buckets).
  std::vector<Tensor> replicated, sharded;
  Sharding sharding;
  for (size_t i = 0; i < params.size(); ++i) {
    const bool expert = ep.enabled() && model.is_expert_parameter(i);
    (expert ? sharded : replicated).push_back(params[i]);
    sharding.sharded.push_back(expert);
  }
  if (ep.enabled()) {
    sharding.comm = ep.comm;  // a checkpoint's whole experts: one group's blocks
    sharding.first = model.first_expert();
    sharding.local = model.local_experts();
    sharding.experts = c.model.experts();
  }
  Sharding optim_sharding = sharding;  // the moments: m of every parameter, then v
  optim_sharding.sharded.insert(optim_sharding.sharded.end(), sharding.sharded.begin(),
                                sharding.sharded.end());
  std::optional<dist::GradBuckets> buckets, expert_buckets;
  const int64_t bucket_bytes = int64_t(c.bucket_mb * double(1 << 20));
  if (reduce) buckets.emplace(comm, replicated, bucket_bytes);
  if (expert_replicas) expert_buckets.emplace(*expert_replicas, sharded, bucket_bytes);
  // The backward reports both sets as their gradients become final, replicated first.
  std::vector<Tensor> watched = replicated;
  if (expert_buckets) watched.insert(watched.end(), sharded.begin(), sharded.end());
  const auto on_ready = [&](size_t i) {
    if (i < replicated.size()) buckets->ready(i);
    else expert_buckets->ready(i - replicated.size());
  };
  const std::vector<bool> decay = decay_flags(params);
  // ZeRO-1: each rank keeps AdamW's moments for its share of the parameters.
  std::optional<Zero1> zero;
  if (c.zero1 && reduce)
    zero.emplace(comm, expert_replicas.get(), params, replicated, sharded, sharding);
  int64_t start = 0;

  if (lead) fs::create_directories(c.run_dir);
  if (const auto latest = latest_checkpoint(c.run_dir)) {
    // Everything is read and checked (config, state, both tensor sets) before anything is
    // copied: a checkpoint that cannot be resumed leaves the fresh model untouched.
    const Checkpoint ck = load_checkpoint(*latest);
    const std::string state_path = ck.dir + "/state.json";
    REMOE_CHECK(ck.state.contains("config") && ck.state["config"].is_string(), state_path,
                ": has no \"config\" string (the run's resolved config), so it cannot be checked ",
                "against this run's");
    check_resume_config(ck.dir, parse_config(ck.state["config"].get<std::string>(), state_path, {}), c);
    // The ranks' micro-batches make up the step: another number of them is another run.
    const int64_t saved_world = ck.state.value("world_size", int64_t(1));
    REMOE_CHECK(saved_world == world, "checkpoint ", ck.dir, " was made by a job of ", saved_world,
                " rank(s), this one has ", world, ": each step takes train.grad_accum micro-",
                "batches per rank, so the run would go on with another batch; resume with ",
                saved_world, " rank(s), or use another log.run_dir to start a new run");
    REMOE_CHECK(ck.step <= c.steps, "checkpoint ", ck.dir, " is of step ", ck.step,
                ", beyond train.steps = ", c.steps, " (raise train.steps to continue the run)");
    const ResumeState rs = read_resume_state(ck);
    const std::vector<Tensor> full_params = sharding.full_like(params);
    const std::vector<Tensor> full_state =
        zero ? zero->empty_state() : optim_sharding.full_like(optim.state());
    check_by_name(full_params, ck.model, ck.dir + "/model.safetensors");
    check_by_name(full_state, ck.optimizer, ck.dir + "/optimizer.safetensors");
    restore_router_state(model.router_state(), ck.state, state_path);  // checks, then copies
    copy_by_name(full_params, ck.model, ck.dir + "/model.safetensors");
    copy_by_name(full_state, ck.optimizer, ck.dir + "/optimizer.safetensors");
    sharding.keep_slices(params, full_params);
    if (zero)
      zero->load_state(full_state);
    else
      optim_sharding.keep_slices(optim.state(), full_state);
    start = ck.step;
    lambda.lambda = rs.lambda;
    sampler.set_state(rs.data_rng);
    if (start == c.steps) {  // the README's command run a second time: say so, touch nothing
      if (lead)
        std::printf("%s is complete: its checkpoint %s is of the last step (train.steps = %lld); "
                    "raise train.steps to continue it, or choose another log.run_dir\n",
                    c.run_dir.c_str(), ck.dir.c_str(), (long long)c.steps);
      RunResult done;
      done.already_complete = true;
      done.final_lambda = lambda.lambda;
      done.last_checkpoint = ck.dir;
      return done;
    }
    if (lead)
      std::printf("resuming from %s (step %lld, λ %.3e)\n", ck.dir.c_str(), (long long)start,
                  lambda.lambda);
  }
  // Built, restored and sharded on the CPU; then the run moves to its device (train.device).
  const Device device = resolve_device(c.device);
  model.to(device);
  if (zero) zero->move_to(device);
  model.set_precision(resolve_precision(c.precision, device));
  for (const Tensor& t : optim.state()) t.move_to(device);

  const fs::path metrics_path = fs::path(c.run_dir) / "metrics.jsonl";
  std::ofstream metrics;
  std::optional<EventWriter> tensorboard;
  if (lead) {
    std::ofstream(fs::path(c.run_dir) / "config.toml") << to_toml(c);
    // Resuming keeps the lines of the steps already taken and drops any written after the
    // checkpoint (a crash between a checkpoint and the next one).
    if (start > 0 && fs::exists(metrics_path)) {
      std::ifstream in(metrics_path);
      std::string kept, line;
      while (std::getline(in, line))
        if (!line.empty() && json::parse(line).value("step", int64_t(0)) <= start) kept += line + "\n";
      in.close();
      std::ofstream(metrics_path) << kept;
    }
    metrics.open(metrics_path, start > 0 ? std::ios::app : std::ios::trunc);
    REMOE_CHECK(metrics, "cannot write ", metrics_path.string());
    if (c.tensorboard) tensorboard.emplace((fs::path(c.run_dir) / "tb").string(), start + 1);

    std::printf("%s\n", to_toml(c).c_str());  // the resolved config, as saved in config.toml
    const std::string where =
        str_cat(device == Device::cuda ? "the GPU (" + device::cuda_device_name() + ")" : "the CPU",
                model.precision() == model::Precision::bf16 ? " in bf16" : " in f32");
    std::printf("remoe train: %s on %s, %lld params (%lld active), %lld steps of %s%lld×%lld×%lld tokens\n",
                c.data_path.c_str(), where.c_str(), (long long)model.n_params(), (long long)model.n_active_params(),
                (long long)c.steps, world > 1 ? str_cat(world, " ranks × ").c_str() : "",
                (long long)c.grad_accum, (long long)c.batch_size, (long long)c.seq_len);
  }

  RunResult result;
  // Saves the state after `step` (rank 0 writes), then applies the retention policy.
  const auto save = [&](int64_t step) {
    const std::vector<Tensor> model_tensors = sharding.gather(params);
    const std::vector<Tensor> optim_tensors =
        zero ? zero->gather_state() : optim_sharding.gather(optim.state());
    if (!lead) return std::string();
    json state = {{"lambda", lambda.lambda}, {"data_rng", sampler.state()},
                  {"seed", c.seed},         {"world_size", world},
                  {"config", to_toml(c)}};
    save_router_state(state, model.router_state());
    result.last_checkpoint = save_checkpoint(c.run_dir, step, model_tensors, optim_tensors, state);
    prune_checkpoints(c.run_dir, c.keep_last, c.keep_every);
    return result.last_checkpoint;
  };
  int64_t skips_in_a_row = 0, last_good_step = start;
  const StopSignals signals;
  cpu::AdamWHyper hyper{c.lr, c.beta1, c.beta2, c.eps, c.weight_decay};
  const int64_t n_moe_layers = moe ? c.model.n_layers : 0, n_experts = c.model.experts();
  PhaseTimer phases(device);
  for (int64_t step = start; step < c.steps; ++step) {
    const NvtxRange step_range("step");
    const auto t0 = std::chrono::steady_clock::now();
    phases.start();
    if (device == Device::cuda) device::cuda_memory_reset_peak();
    StepRecord r;
    r.step = step + 1;
    r.lr = learning_rate(c, step);
    r.lambda = lambda.lambda;
    model.router_state().step = step;  // the TopK warm-up's k
    for (const Tensor& b : model.router_state().bias) r.router_bias.push_back(as_doubles(b));

    // This rank's sums, then every rank's: [loss, aux, then per MoE layer its expert counts,
    // then per MoE layer the dropped and the routed pairs, then the z-loss]. The counts are
    // integers, exact in a double, so S — and λ — are the same bit for bit however the
    // micro-batches are spread over ranks.
    const size_t at_dropped = size_t(2 + n_moe_layers * n_experts);
    const size_t at_routed = at_dropped + size_t(n_moe_layers), at_z = at_routed + size_t(n_moe_layers);
    std::vector<double> sums(at_z + 1, 0.0);
    std::vector<std::pair<Tensor, Tensor>> losses;  // (CE, aux) of each micro-batch, in order
    for (int64_t micro = 0; micro < micro_total; ++micro) {
      if (micro / c.grad_accum != rank) {  // another rank's micro-batch
        sampler.skip(c.batch_size);
        continue;
      }
      const Batch b = sampler.next(c.batch_size).to(device);
      phases.mark("data");
      const model::ForwardOutput out = model.forward(b.inputs, c.batch_size, c.seq_len, lambda.lambda);
      const Tensor ce = ops::cross_entropy(out.logits, b.targets);
      const Tensor loss = ops::scale(ops::add(ce, out.aux), 1.0 / double(micro_total));
      phases.mark("forward");
      {
        const NvtxRange range("backward");
        if (buckets && micro == (rank + 1) * c.grad_accum - 1)  // the step's last backward here
          backward(loss, watched, on_ready);
        else
          backward(loss);
      }
      phases.mark("backward");
      // Read after the micro-batch loop: reading now would make the host wait for this backward
      // before it queues the next forward.
      losses.push_back({ce, out.aux});
      for (size_t l = 0; l < out.layers.size(); ++l)
        for (int64_t e = 0; e < n_experts; ++e)
          sums[2 + l * size_t(n_experts) + size_t(e)] += out.layers[l].expert_counts[size_t(e)];
      for (size_t l = 0; l < out.layers.size(); ++l) {
        sums[at_dropped + l] += double(out.layers[l].dropped);
        sums[at_routed + l] += double(out.layers[l].routed);
        sums[at_z] += out.layers[l].z_loss / double(micro_total);
      }
    }
    for (const auto& [ce, aux] : losses) {  // the same sums, in the same order, as read eagerly
      sums[0] += ce.item() / double(micro_total);
      sums[1] += aux.item() / double(micro_total);
    }
    if (buckets) {
      buckets->finish();
      if (expert_buckets) expert_buckets->finish();
      sums = sum_over_ranks(comm, sums);
      phases.mark("grad_sync");
    }
    r.loss = sums[0];
    r.aux = sums[1];
    if (moe) {
      // S = mean over (layer, micro-batch, rank) of 1 − Σ A / (T·E) (REMOE_SPEC §2).
      const double pairs = double(micro_total * c.batch_size * c.seq_len * n_experts);
      r.layer_sparsity.assign(size_t(n_moe_layers), 0.0);
      r.expert_load.assign(size_t(n_moe_layers), std::vector<double>(size_t(n_experts), 0.0));
      double active_all = 0;
      for (int64_t l = 0; l < n_moe_layers; ++l) {
        const double* counts = &sums[2 + size_t(l * n_experts)];
        double active = 0;
        for (int64_t e = 0; e < n_experts; ++e) active += counts[e];
        for (int64_t e = 0; e < n_experts; ++e)
          r.expert_load[size_t(l)][size_t(e)] = active > 0 ? counts[e] / active : 0.0;
        r.layer_sparsity[size_t(l)] = 1.0 - active / pairs;
        active_all += active;
      }
      r.sparsity = 1.0 - active_all / (pairs * double(n_moe_layers));
      if (c.model.router == model::RouterKind::topk && c.model.capacity_factor > 0)
        for (int64_t l = 0; l < n_moe_layers; ++l)
          r.dropped_fraction.push_back(sums[at_routed + size_t(l)] > 0
                                           ? sums[at_dropped + size_t(l)] / sums[at_routed + size_t(l)]
                                           : 0.0);
      if (c.model.z_loss_coeff > 0) r.z_loss = sums[at_z];
    }
    if (hooks.after_backward) hooks.after_backward(params, r.step);

    {  // clipping and AdamW
      const NvtxRange optimizer_range("optimizer");
      // (A non-finite norm leaves the gradients scaled by NaN or 0: they are dropped below.)
      if (ep.enabled()) {
        // The replicated part once, and every expert once: the blocks of one group's ranks.
        const double rep = ops::grad_norm(replicated), own = ops::grad_norm(sharded);
        r.grad_norm = std::sqrt(rep * rep + sum_over_ranks(*ep.comm, {own * own})[0]);
        if (c.grad_clip > 0) ops::clip_grads_to_norm(params, r.grad_norm, c.grad_clip);
      } else {
        r.grad_norm = c.grad_clip > 0 ? ops::clip_grad_norm(params, c.grad_clip) : ops::grad_norm(params);
      }
      r.skip_reason = non_finite_reason(r);
      r.skipped = !r.skip_reason.empty();
      hyper.lr = r.lr;
      // AdamW's bias correction counts steps, skipped ones included: the count stays a function
      // of the step number alone (it is not saved), and a few skips barely move it.
      if (!r.skipped) {
        if (zero) zero->step(hyper, step + 1);
        else ops::adamw_step(params, optim.m, optim.v, decay, hyper, step + 1);
      }
      for (const Tensor& p : params) p.zero_grad();
      phases.mark("optimizer");
    }
    // NOTE: on the GPU this waits for the optimizer; the next step's first batch copy would
    // wait for it anyway.
    r.phase_seconds = phases.collect();
    if (r.skipped) {
      ++skips_in_a_row;
    } else {
      skips_in_a_row = 0;
      last_good_step = r.step;
      if (adaptive_lambda) lambda.update(r.sparsity);
      if (!model.router_state().bias.empty()) {  // from the whole step's counts (every rank's)
        std::vector<std::vector<double>> counts(static_cast<size_t>(n_moe_layers));
        for (int64_t l = 0; l < n_moe_layers; ++l)
          counts[size_t(l)].assign(sums.begin() + 2 + l * n_experts, sums.begin() + 2 + (l + 1) * n_experts);
        model::update_expert_bias(model.router_state(), counts, c.model.bias_update_rate);
      }
    }

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.tokens_per_s = double(micro_total * c.batch_size * c.seq_len) / seconds;
    if (device == Device::cuda) r.gpu_memory_peak = double(device::cuda_memory_peak());
    const bool last = r.step == c.steps;
    if (corpus.has_validation() && (last || (c.eval_every > 0 && r.step % c.eval_every == 0))) {
      r.has_val = true;
      r.val_loss = evaluate(model, corpus, c, comm);
      r.val_bpb = r.val_loss / std::numbers::ln2;
      result.final_val_loss = r.val_loss;
    }
    if (lead) {
      metrics << to_json(r).dump() << "\n" << std::flush;
      if (r.skipped) print_skip_line(r, c.steps, skips_in_a_row, c.max_skips);
      if (tensorboard) tensorboard->write_scalars(r.step, step_scalars(r));
      if (r.step % c.log_every == 0 || last || r.has_val) print_line(r, c.steps, moe);
    }
    bool saved = false;
    if (last || (c.checkpoint_every > 0 && r.step % c.checkpoint_every == 0)) {
      save(r.step);
      saved = true;
    }
    if (on_step) on_step(r);
    const int64_t this_step = r.step;
    const std::string reason = r.skip_reason;
    result.steps.push_back(std::move(r));

    if (skips_in_a_row >= c.max_skips) {
      // Skipped steps change no weight, moment or λ: the state now is the last good step's,
      // with the data stream past the bad batches.
      const std::string dir = saved ? result.last_checkpoint : save(this_step);
      REMOE_FAIL("step ", this_step, ": ", skips_in_a_row, " steps in a row had a non-finite ",
                 "loss or gradient (train.max_skips = ", c.max_skips, "; the last: ", reason,
                 "); stopped with a checkpoint of the last good state (the weights after step ",
                 last_good_step, ") in ", lead ? dir : c.run_dir + "/checkpoints (rank 0 wrote it)",
                 " - lower optim.lr or check the data, then run again to resume from it");
    }
    // Every rank stops at the same step: a signal any rank got counts for all.
    int sig = StopSignals::received();
    if (reduce) {
      const std::vector<double> got = sum_over_ranks(comm, {double(sig == SIGINT), double(sig == SIGTERM)});
      sig = got[0] > 0 ? SIGINT : got[1] > 0 ? SIGTERM : 0;
    }
    if (sig != 0 && !last) {
      const std::string dir = saved ? result.last_checkpoint : save(this_step);
      if (lead) {
        std::printf("interrupted by %s at step %lld, checkpoint saved to %s; run the same command "
                    "to resume\n", StopSignals::signal_name(sig), (long long)this_step, dir.c_str());
        std::fflush(stdout);
      }
      result.interrupted_by = sig;
      break;
    }
  }
  result.final_lambda = lambda.lambda;
  return result;
}

}  // namespace remoe::train
