#include "train/phase_timer.h"

#include "autodiff/device.h"

namespace remoe::train {

PhaseTimer::~PhaseTimer() {
  for (void* e : events_) device::cuda_event_destroy(e);
}

void PhaseTimer::start() {
  phases_.clear();
  times_.clear();
  marks_ = 0;
  mark(nullptr);
}

void PhaseTimer::mark(const char* phase) {
  if (phase) phases_.push_back(phase);
  if (device_ == Device::cpu) {
    times_.push_back(std::chrono::steady_clock::now());
    return;
  }
  if (marks_ == events_.size()) events_.push_back(device::cuda_event_create());
  device::cuda_event_record(events_[marks_++]);
}

std::vector<std::pair<std::string, double>> PhaseTimer::collect() {
  std::vector<std::pair<std::string, double>> out;
  for (size_t i = 0; i < phases_.size(); ++i) {
    const double seconds =
        device_ == Device::cpu ? std::chrono::duration<double>(times_[i + 1] - times_[i]).count()
                               : device::cuda_event_seconds(events_[i], events_[i + 1]);
    auto it = out.begin();
    while (it != out.end() && it->first != phases_[i]) ++it;
    if (it == out.end()) out.emplace_back(phases_[i], seconds);
    else it->second += seconds;
  }
  phases_.clear();
  times_.clear();
  marks_ = 0;
  return out;
}

}  // namespace remoe::train
