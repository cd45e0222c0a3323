// CPU reference z-loss: a max-shifted log-sum-exp per token, in double.
#include "kernels/z_loss.h"

#include <algorithm>
#include <cmath>

namespace remoe::cpu {
namespace {

template <typename T>
double log_sum_exp(const T* z, int64_t n) {
  double m = double(z[0]);
  for (int64_t e = 1; e < n; ++e) m = std::max(m, double(z[e]));
  double s = 0;
  for (int64_t e = 0; e < n; ++e) s += std::exp(double(z[e]) - m);
  return m + std::log(s);
}

}  // namespace

template <typename T>
void z_loss_forward(T* loss, const T* logits, int64_t n_tokens, int64_t n_experts, double coeff) {
  if (n_tokens == 0) {
    *loss = T(0);
    return;
  }
  double acc = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const double lse = log_sum_exp(logits + t * n_experts, n_experts);
    acc += lse * lse;
  }
  *loss = T(coeff / double(n_tokens) * acc);
}

template <typename T>
void z_loss_backward(T* dlogits, const T* dloss, const T* logits, int64_t n_tokens,
                     int64_t n_experts, double coeff) {
  if (n_tokens == 0) return;
  const double base = double(*dloss) * coeff / double(n_tokens);
#pragma omp parallel for schedule(static) if (n_tokens * n_experts > 65536)
  for (int64_t t = 0; t < n_tokens; ++t) {
    const T* z = logits + t * n_experts;
    const double lse = log_sum_exp(z, n_experts);
    for (int64_t e = 0; e < n_experts; ++e)
      dlogits[t * n_experts + e] = T(base * 2.0 * lse * std::exp(double(z[e]) - lse));
  }
}

template void z_loss_forward<float>(float*, const float*, int64_t, int64_t, double);
template void z_loss_forward<double>(double*, const double*, int64_t, int64_t, double);
template void z_loss_backward<float>(float*, const float*, const float*, int64_t, int64_t, double);
template void z_loss_backward<double>(double*, const double*, const double*, int64_t, int64_t, double);

}  // namespace remoe::cpu
