// Where a training step's time goes: marks at the phase boundaries of a step (data, forward,
// backward, gradient all-reduce, optimizer), read once at the step's end. On the GPU each mark
// is a CUDA event on remoe's stream, so a span is the time the GPU took to get from one mark to
// the next — its work plus any idle gaps while it waited for the host — and marking never
// waits; on the CPU, whose ops are synchronous, a mark is the host clock. This is the phase
// split of an Nsight Systems timeline's NVTX ranges, without the profiler (the H200 machines
// have none) and in every run's metrics.jsonl.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "autodiff/tensor.h"

namespace remoe::train {

class PhaseTimer {
 public:
  explicit PhaseTimer(Device device) : device_(device) {}
  ~PhaseTimer();
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

  // Opens the step: the first span starts here.
  void start();
  // Closes the span since the previous mark and names it `phase`.
  void mark(const char* phase);
  // Seconds per phase, summed over its spans, in the order the phases first appeared; waits
  // for the last mark (on the GPU: for the stream to reach it). Forgets the marks.
  std::vector<std::pair<std::string, double>> collect();

 private:
  Device device_;
  std::vector<const char*> phases_;                           // the phase each mark closes
  std::vector<std::chrono::steady_clock::time_point> times_;  // CPU: mark times, start first
  std::vector<void*> events_;                                 // GPU: created once, reused
  size_t marks_ = 0;                                          // GPU: events recorded this step
};

}  // namespace remoe::train
