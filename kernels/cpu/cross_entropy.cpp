// Rows run in parallel (each row's max, sum and log in double); the per-row losses are then
// added serially in token order, so the loss does not depend on the thread count. A negative
// target marks an ignored row (the op layer allows only −1).
#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace remoe::cpu {
namespace {

int64_t count_valid(const int32_t* targets, int64_t n_tokens) {
  int64_t n = 0;
  for (int64_t t = 0; t < n_tokens; ++t) n += targets[t] >= 0;
  return n;
}

}  // namespace

template <typename T>
void cross_entropy_forward(T* loss, T* lse, const T* logits, const int32_t* targets,
                           int64_t n_tokens, int64_t vocab) {
  std::vector<double> row_loss(size_t(n_tokens), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const T* z = logits + t * vocab;
    // Subtracting the max keeps every exp in (0, 1]: large logits cannot overflow.
    double m = double(z[0]);
    for (int64_t v = 1; v < vocab; ++v) m = std::max(m, double(z[v]));
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(z[v]) - m);
    const double l = m + std::log(sum);
    lse[t] = T(l);
    if (targets[t] >= 0) row_loss[size_t(t)] = l - double(z[targets[t]]);
  }
  const int64_t n_valid = count_valid(targets, n_tokens);
  double total = 0;
  for (int64_t t = 0; t < n_tokens; ++t) total += row_loss[size_t(t)];
  loss[0] = n_valid > 0 ? T(total / double(n_valid)) : T(0);
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* dloss, const T* logits, const T* lse,
                            const int32_t* targets, int64_t n_tokens, int64_t vocab) {
  const int64_t n_valid = count_valid(targets, n_tokens);
  const double scale = n_valid > 0 ? double(dloss[0]) / double(n_valid) : 0.0;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n_tokens; ++t) {
    T* dz = dlogits + t * vocab;
    const int32_t target = targets[t];
    if (target < 0) {
      std::fill(dz, dz + vocab, T(0));
      continue;
    }
    const T* z = logits + t * vocab;
    const double l = double(lse[t]);
    for (int64_t v = 0; v < vocab; ++v) dz[v] = T(scale * std::exp(double(z[v]) - l));
    dz[target] = T(scale * (std::exp(double(z[target]) - l) - 1.0));
  }
}

template void cross_entropy_forward<float>(float*, float*, const float*, const int32_t*, int64_t, int64_t);
template void cross_entropy_forward<double>(double*, double*, const double*, const int32_t*, int64_t, int64_t);
template void cross_entropy_backward<float>(float*, const float*, const float*, const float*, const int32_t*, int64_t, int64_t);
template void cross_entropy_backward<double>(double*, const double*, const double*, const double*, const int32_t*, int64_t, int64_t);

}  // namespace remoe::cpu
