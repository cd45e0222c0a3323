#include "kernels/adamw.h"

#include <cmath>

namespace remoe::cpu {

template <typename T>
void adamw_step(T* param, T* m, T* v, const T* grad, int64_t n, const AdamWHyper& h, int64_t step) {
  const double bias1 = 1.0 - std::pow(h.beta1, double(step));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(h.beta2, double(step)));
  const double step_size = h.lr / bias1;
  const double decay = 1.0 - h.lr * h.weight_decay;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const double g = grad[i];
    const double mi = h.beta1 * m[i] + (1.0 - h.beta1) * g;
    const double vi = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
    m[i] = T(mi);
    v[i] = T(vi);
    const double denom = std::sqrt(double(v[i])) / bias2_sqrt + h.eps;
    param[i] = T(double(param[i]) * decay - step_size * double(m[i]) / denom);
  }
}

template void adamw_step<float>(float*, float*, float*, const float*, int64_t, const AdamWHyper&, int64_t);
template void adamw_step<double>(double*, double*, double*, const double*, int64_t, const AdamWHyper&, int64_t);

}  // namespace remoe::cpu
