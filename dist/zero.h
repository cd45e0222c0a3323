// ZeRO stage 1 for data parallelism: AdamW's moments sharded over the ranks. The replicated
// parameters are seen as one flat vector of N values (in parameter order); rank r owns the
// contiguous slice [r·S, min((r+1)·S, N)), S = ceil(N / W), and keeps m and v for it alone —
// 2·N/W values instead of 2·N. A step updates the owned slice from the (already all-reduced)
// gradients with the same elementwise AdamW as the unsharded optimizer, then all-gathers the
// parameters, so every rank ends with the same weights — bit for bit those of the unsharded
// update, since AdamW treats every element alone.
//
// Costs: one all-gather of the N parameters per step on top of the gradients' all-reduce (a
// reduce-scatter in place of the all-reduce would save half of that; not done). Parameters
// are f32, built on the CPU; move_to takes the moments to the run's device (the GPU, with the
// NCCL communicator, or a Single, which copies between any devices) when the parameters go
// there. The trainer keeps one per set of ranks that share parameters (with expert
// parallelism: the job for the replicated ones, an expert block's replicas for it).
// Checkpoints hold whole moments: gather_state() rebuilds "<name>.m" and "<name>.v" (on the
// CPU) as the unsharded optimizer names them.
#pragma once

#include <cstdint>
#include <vector>

#include "dist/communicator.h"
#include "kernels/adamw.h"

namespace remoe::dist {

class ShardedAdamW {
 public:
  // params: f32 CPU tensors, the same on every rank; decay[i]: whether params[i] takes weight
  // decay (the trainer: not the 1-D ones).
  ShardedAdamW(Communicator& comm, std::vector<Tensor> params, std::vector<bool> decay);

  // One AdamW step (1-based `step`) of the owned slice from the parameters' gradients (a
  // parameter without one is an error), then the all-gather that gives every rank every value.
  void step(const cpu::AdamWHyper& hyper, int64_t step);
  // Moves the moments and the gather buffers to `device`, where the parameters now are; it
  // must be the communicator's (an error says so otherwise).
  void move_to(Device device);

  // The whole moments as named tensors, m of every parameter then v (a collective).
  std::vector<Tensor> gather_state() const;
  // Fresh zero tensors of those names and shapes, to load a checkpoint into.
  std::vector<Tensor> empty_state() const;
  // Keeps this rank's slice of whole moments laid out as gather_state() returns them.
  void load_state(const std::vector<Tensor>& state);

  int64_t begin() const { return begin_; }  // the owned slice of the flat vector
  int64_t end() const { return end_; }
  int64_t total() const { return total_; }  // N

 private:
  // Calls fn(i, lo, hi) for each parameter i overlapping the owned slice, with [lo, hi) the
  // overlap in flat indices.
  template <typename Fn>
  void for_owned(Fn&& fn) const;
  std::vector<Tensor> unflatten(const Tensor& flat, const char* suffix) const;

  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<bool> decay_;
  std::vector<int64_t> offset_;  // flat index of each parameter's first value
  int64_t total_ = 0, shard_ = 0, begin_ = 0, end_ = 0;
  Tensor m_, v_;                 // (S) f32: the owned slice's moments (zero-padded past N)
  Tensor mine_, all_;            // (S), (W·S) f32: the all-gather of the parameters
  Device device_ = Device::cpu;  // where the parameters and all of the above live
};

}  // namespace remoe::dist
