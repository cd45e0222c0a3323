#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace remoe::train {

int64_t warmup_steps(const TrainConfig& c) {
  const int64_t w = c.warmup_steps >= 0 ? c.warmup_steps : c.steps / 100;
  return std::clamp<int64_t>(w, 1, c.steps);
}

double learning_rate(const TrainConfig& c, int64_t step) {
  const int64_t w = warmup_steps(c);
  if (step < w) return c.lr * double(step + 1) / double(w);
  const int64_t decay = c.steps - w;
  if (decay <= 1) return c.lr;
  const double progress = double(step - w) / double(decay - 1);  // 0 at the first, 1 at the last
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace remoe::train
