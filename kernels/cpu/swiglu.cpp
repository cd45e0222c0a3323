// Computed in double whatever T is; the sigmoid is written so exp never overflows.
#include "kernels/swiglu.h"

#include <cmath>

namespace remoe::cpu {
namespace {

double sigmoid(double a) {
  if (a >= 0) return 1.0 / (1.0 + std::exp(-a));
  const double e = std::exp(a);
  return e / (1.0 + e);
}

}  // namespace

template <typename T> void swiglu_forward(T* h, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double ai = double(a[i]);
    h[i] = T(ai * sigmoid(ai) * double(b[i]));
  }
}

// silu'(a) = σ(a) · (1 + a · (1 − σ(a))).
template <typename T>
void swiglu_backward(T* da, T* db, const T* dh, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double ai = double(a[i]), g = double(dh[i]);
    const double sig = sigmoid(ai);
    if (da) da[i] = T(g * double(b[i]) * sig * (1.0 + ai * (1.0 - sig)));
    if (db) db[i] = T(g * ai * sig);
  }
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t);
template void swiglu_forward<double>(double*, const double*, const double*, int64_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*, int64_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*, const double*, int64_t);

}  // namespace remoe::cpu
