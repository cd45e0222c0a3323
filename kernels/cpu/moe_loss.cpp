#include "kernels/moe_loss.h"

#include <cstddef>
#include <vector>

namespace remoe::cpu {

template <typename T>
void load_balance_loss_forward(T* loss, const T* scores, const int32_t* expert_counts,
                               int64_t n_tokens, int64_t n_experts, double coeff, int k) {
  if (n_tokens == 0) {
    *loss = T(0);
    return;
  }
  // Column sums token by token (row-major friendly), then Σ_e c_e · column sum.
  std::vector<double> column(static_cast<size_t>(n_experts), 0.0);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const T* s = scores + t * n_experts;
    for (int64_t e = 0; e < n_experts; ++e) column[size_t(e)] += double(s[e]);
  }
  double acc = 0;
  for (int64_t e = 0; e < n_experts; ++e) acc += double(expert_counts[e]) * column[size_t(e)];
  const double n = double(n_tokens);
  *loss = T(coeff * double(n_experts) / (double(k) * n * n) * acc);
}

template <typename T>
void load_balance_loss_backward(T* dscores, const T* dloss, const int32_t* expert_counts,
                                int64_t n_tokens, int64_t n_experts, double coeff, int k) {
  if (n_tokens == 0) return;
  const double n = double(n_tokens);
  const double base = double(*dloss) * coeff * double(n_experts) / (double(k) * n * n);
  std::vector<T> row(static_cast<size_t>(n_experts));
  for (int64_t e = 0; e < n_experts; ++e) row[size_t(e)] = T(base * double(expert_counts[e]));
#pragma omp parallel for schedule(static) if (n_tokens * n_experts > 65536)
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t e = 0; e < n_experts; ++e) dscores[t * n_experts + e] = row[size_t(e)];
}

template <typename T>
void l1_loss_forward(T* loss, const T* scores, int64_t n_tokens, int64_t n_experts, double coeff) {
  if (n_tokens == 0) {
    *loss = T(0);
    return;
  }
  double acc = 0;
  for (int64_t i = 0; i < n_tokens * n_experts; ++i) acc += double(scores[i]);
  *loss = T(coeff / double(n_tokens) * acc);
}

template <typename T>
void l1_loss_backward(T* dscores, const T* dloss, int64_t n_tokens, int64_t n_experts,
                      double coeff) {
  if (n_tokens == 0) return;
  const T g = T(double(*dloss) * coeff / double(n_tokens));
  const int64_t n = n_tokens * n_experts;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dscores[i] = g;
}

template void load_balance_loss_forward<float>(float*, const float*, const int32_t*, int64_t, int64_t, double, int);
template void load_balance_loss_forward<double>(double*, const double*, const int32_t*, int64_t, int64_t, double, int);
template void load_balance_loss_backward<float>(float*, const float*, const int32_t*, int64_t, int64_t, double, int);
template void load_balance_loss_backward<double>(double*, const double*, const int32_t*, int64_t, int64_t, double, int);
template void l1_loss_forward<float>(float*, const float*, int64_t, int64_t, double);
template void l1_loss_forward<double>(double*, const double*, int64_t, int64_t, double);
template void l1_loss_backward<float>(float*, const float*, int64_t, int64_t, double);
template void l1_loss_backward<double>(double*, const double*, int64_t, int64_t, double);

}  // namespace remoe::cpu
